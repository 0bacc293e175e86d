"""Development tooling: throwaway Prosody and ejabberd servers for the tests and the benchmarks
(:mod:`.prosody`, :mod:`.ejabberd`, :mod:`.xmpp_server`), beside the dev scripts and server
configurations of this folder. No runtime command imports it (``tests/cli/test_startup.py``)."""
