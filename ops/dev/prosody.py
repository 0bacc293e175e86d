"""A throwaway Prosody on loopback, for tests, development, the demo and benchmarks.

::

    with LocalProsody(admins=["publisher"]) as server:
        server.register("publisher", "secret")
        ...  # connect to server.host:server.port as publisher@localhost, tls="none"

It runs ``prosody -F --config ops/dev/prosody.cfg.lua`` in the background with its settings in
environment variables (the config reads them), on a free loopback port, with data, pid file
and log in a temporary directory. Pubsub and PEP data live in memory: a restart keeps the
accounts (on disk) and the port, and loses every node. Start-up takes about 0.05 s here.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Self

from pubsub_cache.errors import PubsubCacheError

from .xmpp_server import ServerLifecycle, answers_xmpp, free_port

APT_INSTALL = "apt-get install -y prosody"
_PORT_FAILURE = "Failed to open server port"


class ProsodyError(PubsubCacheError):
    """Raised when the local Prosody cannot be run as asked."""


class ProsodyNotInstalled(ProsodyError):
    """Raised when the ``prosody`` or ``prosodyctl`` binary is not on the PATH."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        super().__init__(f"{binary!r} is not installed (not on PATH); install it: {APT_INSTALL}")


class ProsodyStartFailed(ProsodyError):
    """Raised when Prosody exits or does not listen on its port before the deadline."""

    def __init__(self, reason: str, *, port: int, log_tail: str) -> None:
        self.port = port
        self.log_tail = log_tail
        super().__init__(f"local Prosody on port {port}: {reason}\n--- log tail ---\n{log_tail}")


class ProsodyCommandFailed(ProsodyError):
    """Raised when a ``prosodyctl`` command (such as ``register``) fails."""

    def __init__(self, command: str, *, returncode: int, output: str) -> None:
        self.command = command
        self.returncode = returncode
        super().__init__(f"prosodyctl {command} exited with {returncode}: {output.strip()}")


def default_config() -> Path:
    """The packaged ``ops/dev/prosody.cfg.lua``."""
    return Path(str(resources.files("pubsub_cache.ops.dev") / "prosody.cfg.lua"))


class LocalProsody(ServerLifecycle):
    """One Prosody process on ``host:port`` serving ``domain`` and ``pubsub.<domain>``.

    ``admins`` are user names (local parts) made server admins; only admins may create nodes on
    the pubsub component. ``workdir`` defaults to a new temporary directory, removed by
    :meth:`close` (and on leaving the ``with`` block).
    """

    software = "prosody"

    def __init__(
        self,
        *,
        domain: str = "localhost",
        admins: Sequence[str] = (),
        host: str = "127.0.0.1",
        port: int | None = None,
        workdir: Path | None = None,
        config: Path | None = None,
        log_level: str = "info",
        max_items: int = 256,
        start_timeout: float = 10.0,
    ) -> None:
        self.domain = domain
        self.pubsub_service = f"pubsub.{domain}"
        self.host = host
        self.admins = tuple(admins)
        self.config = config or default_config()
        self.log_level = log_level
        self.max_items = max_items
        self.start_timeout = start_timeout
        self._owns_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="pubsub-cache-prosody-"))
        self.port = port or free_port(host)
        self.log_path = self.workdir / "prosody.log"
        self.console_path = self.workdir / "console.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """Whether the Prosody process is alive."""
        return self._process is not None and self._process.poll() is None

    def environment(self) -> dict[str, str]:
        """The environment ``prosody`` and ``prosodyctl`` are run with (what the config reads)."""
        return {
            **os.environ,
            "PUBSUB_CACHE_PROSODY_DIR": str(self.workdir),
            "PUBSUB_CACHE_PROSODY_PORT": str(self.port),
            "PUBSUB_CACHE_PROSODY_INTERFACE": self.host,
            "PUBSUB_CACHE_PROSODY_DOMAIN": self.domain,
            "PUBSUB_CACHE_PROSODY_ADMINS": ",".join(self.jid(user) for user in self.admins),
            "PUBSUB_CACHE_PROSODY_LOG_LEVEL": self.log_level,
            "PUBSUB_CACHE_PROSODY_MAX_ITEMS": str(self.max_items),
        }

    def start(self) -> Self:
        """Start Prosody and return once its c2s port accepts connections."""
        if self.running:
            return self
        binary = _binary("prosody")
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.console_path.open("ab") as console:
            self._process = subprocess.Popen(
                [binary, "-F", "--config", str(self.config)],
                cwd=self.workdir,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
            )
        self._wait_for_port()
        return self

    def _wait_for_port(self) -> None:
        # Ready means: *this* Prosody bound the port (its log says so) and answers an XMPP
        # stream for our domain on it. An answer alone is not enough: when the port is taken,
        # Prosody logs an error and keeps running without it, while the other server (maybe
        # another Prosody for the same domain) answers.
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        bound = f"Activated service 'c2s' on [{self.host}]:{self.port}"
        while True:
            returncode = self._process.poll()
            if returncode is not None:
                self._process = None
                reason = f"prosody exited with {returncode} during start-up"
                raise ProsodyStartFailed(reason, port=self.port, log_tail=self.log_tail())
            logged = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            if _PORT_FAILURE in logged:
                self.stop()
                reason = "the port is in use by another program"
                raise ProsodyStartFailed(reason, port=self.port, log_tail=self.log_tail())
            if bound in logged and answers_xmpp(self.host, self.port, self.domain):
                return
            if time.monotonic() > deadline:
                self.stop()
                reason = f"no XMPP stream on the port after {self.start_timeout:g} s"
                raise ProsodyStartFailed(reason, port=self.port, log_tail=self.log_tail())
            time.sleep(0.01)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL. Keeps the working directory."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def register(self, user: str, password: str) -> str:
        """Create (or reset the password of) an account; returns its bare JID.

        Uses ``prosodyctl register`` with the same config; it writes the account file directly,
        and the running server reads it at the next login (about 30 ms per account).
        """
        command = ["register", user, self.domain, password]
        result = subprocess.run(
            [_binary("prosodyctl"), "--config", str(self.config), *command],
            cwd=self.workdir,
            env=self.environment(),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            shown = f"register {user} {self.domain}"
            output = result.stdout + result.stderr
            raise ProsodyCommandFailed(shown, returncode=result.returncode, output=output)
        return self.jid(user)

    def register_many(self, users: Sequence[str], password: str) -> list[str]:
        """Create (or reset) many accounts with one password; returns their bare JIDs in order.

        ``prosodyctl register`` starts Prosody's whole Lua runtime for each account (about
        30 ms); this runs one Lua process that starts it once and creates every account with
        Prosody's own code (``util.prosodyctl.adduser``: the same stringprep, SCRAM hashing and
        account files): 200 accounts in about 0.6 s here. Works whether or not the server runs.
        """
        names = _user_names(users)
        if not names:
            return []
        # The password goes through the environment: never on a command line (ps shows it).
        secret = {"PUBSUB_CACHE_REGISTER_PASSWORD": password}
        self._run_lua("register_many", _REGISTER_MANY, "".join(f"{u}\n" for u in names), secret)
        return [self.jid(user) for user in names]

    def befriend_many(self, user: str, contacts: Sequence[str]) -> None:
        """Make ``user`` and each of ``contacts`` (local parts, all registered) mutual contacts
        (presence subscription ``both`` in both rosters), as accepted subscription requests
        would, in one Lua process: contacts get ``user``'s PEP notifications. Only for accounts
        that are offline now: the server keeps an online session's roster in memory."""
        [user], others = _user_names([user]), _user_names(contacts)
        if not others:
            return
        lines = "".join(f"{user} {contact}\n{contact} {user}\n" for contact in others)
        self._run_lua("befriend_many", _BEFRIEND_MANY, lines)

    def _run_lua(
        self, name: str, body: str, lines: str, environment: dict[str, str] | None = None
    ) -> None:
        """Run ``body`` in Prosody's runtime (as prosodyctl starts it) with ``lines`` on its
        stdin; it must print how many lines it handled."""
        interpreter, settings = _prosodyctl_runtime()
        self.workdir.mkdir(parents=True, exist_ok=True)
        script = self.workdir / f"{name}.lua"
        assignments = "".join(f"{key} = {_lua_string(value)}\n" for key, value in settings.items())
        script.write_text(assignments + _LUA_RUNTIME + body)
        result = subprocess.run(
            [interpreter, str(script), "--config", str(self.config)],
            input=lines,
            cwd=self.workdir,
            env={
                **self.environment(),
                "PUBSUB_CACHE_REGISTER_HOST": self.domain,
                **(environment or {}),
            },
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or result.stdout.strip() != str(lines.count("\n")):
            shown = f"{name} ({lines.count(chr(10))} lines on {self.domain})"
            output = result.stdout + result.stderr
            raise ProsodyCommandFailed(shown, returncode=result.returncode, output=output)

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` of Prosody's log (and of its console output)."""
        tail: list[str] = []
        for path in (self.console_path, self.log_path):
            if path.exists():
                tail.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(tail[-lines:]) or "(no log written)"


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ProsodyNotInstalled(name)
    return found


def _prosodyctl_runtime() -> tuple[str, dict[str, str]]:
    """The Lua interpreter ``prosodyctl`` runs on and the ``CFG_*`` paths it was installed with.

    Both are read from the installed ``prosodyctl`` (its ``#!`` line and its ``CFG_X='...'``
    lines), so a script run the same way finds Prosody's libraries wherever a distribution put them.
    """
    path = Path(_binary("prosodyctl"))
    text = path.read_text(errors="replace")
    first = text.splitlines()[0] if text else ""
    words = first.removeprefix("#!").split()
    if not first.startswith("#!") or not words:
        raise ProsodyCommandFailed("register_many", returncode=-1, output=f"{path}: no #! line")
    interpreter = words[-1] if Path(words[0]).name == "env" else words[0]
    settings = dict(re.findall(r"^(CFG_[A-Z]+)\s*=\s*'([^']*)'", text, flags=re.MULTILINE))
    if "CFG_SOURCEDIR" not in settings:
        raise ProsodyCommandFailed(
            "register_many", returncode=-1, output=f"{path}: no CFG_SOURCEDIR"
        )
    return interpreter, settings


# Each line a user name: the account is created (or its password reset) by prosodyctl's code.
_REGISTER_MANY = """local adduser = require("util.prosodyctl").adduser
local host = os.getenv("PUBSUB_CACHE_REGISTER_HOST")
local password = os.getenv("PUBSUB_CACHE_REGISTER_PASSWORD")
local created = 0
for user in io.lines() do
\tlocal ok, err = adduser({ user = user, host = host, password = password })
\tif not ok then
\t\tio.stderr:write("register ", user, "@", host, ": ", tostring(err), "\\n")
\t\tos.exit(1)
\tend
\tcreated = created + 1
end
print(created)
"""


def _user_names(users: Sequence[str]) -> list[str]:
    # One per line to the Lua scripts, which split on white space.
    names = list(users)
    for user in names:
        if not user or any(char.isspace() for char in user):
            raise ValueError(f"a user name must be non-empty and without spaces: {user!r}")
    return names


def _lua_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


_LUA_RUNTIME = """package.path = CFG_SOURCEDIR .. "/?.lua;" .. package.path
package.cpath = CFG_SOURCEDIR .. "/?.so;" .. package.cpath
require("util.startup").prosodyctl()
"""

# Each line "user contact": contact@host goes into user's roster with subscription "both".
_BEFRIEND_MANY = """local host = os.getenv("PUBSUB_CACHE_REGISTER_HOST")
require("core.storagemanager").initialize_host(host)
require("core.usermanager").initialize_host(host)
local rostermanager = require("core.rostermanager")
local written = 0
for line in io.lines() do
\tlocal user, contact = line:match("^(%S+) (%S+)$")
\tlocal roster = rostermanager.load_roster(user, host)
\troster[contact .. "@" .. host] = { subscription = "both", groups = {} }
\tlocal ok, err = rostermanager.save_roster(user, host, roster)
\tif not ok then
\t\tio.stderr:write("roster of ", user, "@", host, ": ", tostring(err), "\\n")
\t\tos.exit(1)
\tend
\twritten = written + 1
end
print(written)
"""
