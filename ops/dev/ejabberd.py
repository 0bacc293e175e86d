"""A throwaway ejabberd on loopback for tests and development: the twin of
:class:`~pubsub_cache.ops.dev.prosody.LocalProsody` (the surface of :mod:`.xmpp_server`).

It runs ``ejabberdctl ... foreground`` with ``ops/dev/ejabberd.yml`` (copied into the working
directory; a small overlay sets its macros) on a free loopback c2s port. ejabberd 23.01 facts it
relies on (DESIGN.md): ejabberdctl switches to the ``ejabberd`` user, so that user owns the
working directory and this class needs root; the Erlang node name is written into the Mnesia
files, so it is unique and kept in the working directory; Erlang distribution listens on a
second free loopback port (``ERL_DIST_PORT``), so no epmd is started, asked or killed and
instances never collide. Accounts and nodes live in Mnesia: a restart keeps both, and the port.
Start-up takes about 1.5 s, stop about 1 s.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Self

from pubsub_cache.errors import PubsubCacheError

from .xmpp_server import ServerLifecycle, answers_xmpp, free_port

APT_INSTALL = "apt-get install -y ejabberd"
_PORT_IN_USE = "address already in use"


class EjabberdError(PubsubCacheError):
    """Raised when the local ejabberd cannot be run as asked."""


class EjabberdNotInstalled(EjabberdError):
    """Raised when ``ejabberdctl`` is not on the PATH."""

    def __init__(self) -> None:
        super().__init__(f"'ejabberdctl' is not installed (not on PATH); install it: {APT_INSTALL}")


class EjabberdNeedsRoot(EjabberdError):
    """Raised when not run as root: ejabberdctl must switch to the ``ejabberd`` user."""

    def __init__(self) -> None:
        super().__init__("a local ejabberd must be started as root (ejabberdctl su's to ejabberd)")


class EjabberdWorkdirUnreachable(EjabberdError):
    """Raised when the ``ejabberd`` user could not enter the working directory."""

    def __init__(self, workdir: Path, *, blocked_at: Path) -> None:
        self.workdir = workdir
        self.blocked_at = blocked_at
        super().__init__(
            f"the 'ejabberd' user cannot reach the working directory {workdir}: {blocked_at} "
            "is not searchable by it; choose one under /tmp (the default)"
        )


class EjabberdStartFailed(EjabberdError):
    """Raised when ejabberd exits or does not serve its port before the deadline."""

    def __init__(self, reason: str, *, port: int, log_tail: str) -> None:
        self.port = port
        self.log_tail = log_tail
        super().__init__(f"local ejabberd on port {port}: {reason}\n--- log tail ---\n{log_tail}")


class EjabberdPortInUse(EjabberdStartFailed):
    """Raised when another program holds the c2s (or distribution) port."""

    def __init__(self, *, port: int, log_tail: str) -> None:
        super().__init__("the port is in use by another program", port=port, log_tail=log_tail)


class EjabberdCommandFailed(EjabberdError):
    """Raised when an ``ejabberdctl`` command (such as ``register``) fails."""

    def __init__(self, command: str, *, returncode: int, output: str) -> None:
        self.command = command
        self.returncode = returncode
        super().__init__(f"ejabberdctl {command} exited with {returncode}: {output.strip()}")


def default_config() -> Path:
    """``ops/dev/ejabberd.yml``: packaged, or next to this module's source file."""
    packaged = Path(str(resources.files("pubsub_cache.ops.dev") / "ejabberd.yml"))
    if packaged.exists():
        return packaged
    # The strict editable install links only declared package data; its .py files are links
    # into the source tree, where the config always is.
    return Path(__file__).resolve().parent / "ejabberd.yml"


class LocalEjabberd(ServerLifecycle):
    """One ejabberd node on ``host:port`` serving ``domain`` and ``pubsub.<domain>``.

    ``admins`` are user names (local parts) made server admins. ``max_items`` is the most
    items a node keeps and the highest ``pubsub#max_items`` it accepts (``max_items_node``).
    ``workdir`` (spool, logs, config) defaults to a new temporary directory, removed by
    :meth:`close` (and on leaving the ``with`` block). :meth:`restart` keeps the port, the
    accounts and the pubsub nodes.
    """

    software = "ejabberd"

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
        max_items: int = 10_000,
        start_timeout: float = 30.0,
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
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="pubsub-cache-ejabberd-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port(host)
        self.dist_port = free_port(host)
        self.log_path = self.workdir / "ejabberd.log"
        self.console_path = self.workdir / "console.log"
        self._pid_path = self.workdir / "ejabberd.pid"
        self._process: subprocess.Popen[bytes] | None = None
        saved = self.workdir / "node"
        if not saved.exists():
            saved.write_text(f"pubsubcache{os.getpid()}x{uuid.uuid4().hex[:8]}@localhost")
        self.node = saved.read_text().strip()

    @property
    def running(self) -> bool:
        """Whether the ejabberd node (its ``ejabberdctl foreground``) is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start ejabberd and return once it serves XMPP for our domain on its port."""
        if self.running:
            return self
        if os.geteuid() != 0:
            raise EjabberdNeedsRoot
        _check_reachable(self.workdir)
        self._write_config()
        self._pid_path.unlink(missing_ok=True)
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.console_path.open("ab") as console:
            self._process = subprocess.Popen(
                self._ctl_command("foreground"),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of the caller goes through stop()
            )
        self._wait_until_serving(log_offset)
        return self

    def _write_config(self) -> None:
        # ejabberd 23.01 reads no environment in its config: the copied file's macros are
        # replaced by the overlay's (its own define_macro is disallowed in the include).
        (self.workdir / "spool").mkdir(exist_ok=True)
        base = self.workdir / "base.yml"
        shutil.copyfile(self.config, base)
        admins = ", ".join(f'"{self.jid(user)}"' for user in self.admins)
        (self.workdir / "ejabberd.yml").write_text(
            "define_macro:\n"
            f'  PUBSUB_CACHE_DOMAIN: "{self.domain}"\n'
            f'  PUBSUB_CACHE_INTERFACE: "{self.host}"\n'
            f"  PUBSUB_CACHE_PORT: {self.port}\n"
            f"  PUBSUB_CACHE_ADMINS: [{admins}]\n"
            f"  PUBSUB_CACHE_LOG_LEVEL: {self.log_level}\n"
            f"  PUBSUB_CACHE_MAX_ITEMS: {self.max_items}\n"
            f"include_config_file:\n  {base}:\n    disallow: [define_macro]\n"
        )
        # Read by ejabberdctl (bash) in place of /etc/ejabberd/ejabberdctl.cfg, whose
        # EJABBERD_CONFIG_PATH would override --config.
        (self.workdir / "ejabberdctl.cfg").write_text(
            'ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0 '
            '-kernel inet_dist_use_interface {127,0,0,1}"\n'
            f"EJABBERD_PID_PATH={self._pid_path}\n"
            f"ERL_DIST_PORT={self.dist_port}\n"
            "ERL_EPMD_ADDRESS=127.0.0.1\n"
        )
        subprocess.run(["chown", "-R", "ejabberd:ejabberd", str(self.workdir)], check=True)

    def _ctl_command(self, *command: str) -> list[str]:
        ctl = shutil.which("ejabberdctl")
        if ctl is None:
            raise EjabberdNotInstalled
        files = {"--ctl-config": "ejabberdctl.cfg", "--config": "ejabberd.yml", "--spool": "spool"}
        options = [
            part for flag, name in files.items() for part in (flag, str(self.workdir / name))
        ]
        return [ctl, *options, "--logs", str(self.workdir), "--node", self.node, *command]

    def _wait_until_serving(self, log_offset: int) -> None:
        # Ready means: *this* node logged that it accepts connections on our port (after all
        # modules started), and the port answers an XMPP stream for our domain. A taken port
        # makes ejabberd log the error and exit.
        assert self._process is not None
        accepting = f"Start accepting TCP connections at {self.host}:{self.port} "
        deadline = time.monotonic() + self.start_timeout
        while True:
            log = _read(self.log_path, log_offset)
            if _PORT_IN_USE in log or _PORT_IN_USE in _read(self.console_path):
                self.stop()
                raise EjabberdPortInUse(port=self.port, log_tail=self.log_tail())
            returncode = self._process.poll()
            if returncode is not None:
                self._process = None
                reason = f"ejabberd exited with {returncode} during start-up"
                raise EjabberdStartFailed(reason, port=self.port, log_tail=self.log_tail())
            if accepting in log and answers_xmpp(self.host, self.port, self.domain):
                return
            if time.monotonic() > deadline:
                self.stop()
                reason = f"not serving XMPP on the port after {self.start_timeout:g} s"
                raise EjabberdStartFailed(reason, port=self.port, log_tail=self.log_tail())
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the Erlang VM (a clean Mnesia shutdown), wait up to ``timeout``, then
        SIGKILL. Keeps the working directory."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        # The VM runs under su as another user, in its own session: signal it by its pid file
        # (written at boot); before that, the whole process group of ejabberdctl.
        vm = _read(self._pid_path).strip()
        _kill(int(vm) if vm.isdigit() else -process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            if vm.isdigit():
                _kill(int(vm), signal.SIGKILL)
            _kill(-process.pid, signal.SIGKILL)
            process.wait()

    def register(self, user: str, password: str) -> str:
        """Create (or reset the password of) an account; returns its bare JID. Runs ``ejabberdctl
        register`` (0.3 s: each call boots an Erlang VM), ``change_password`` if it exists."""
        result = self._ctl("register", user, self.domain, password)
        if result.returncode != 0 and "conflict" in result.stdout + result.stderr:
            result = self._ctl("change_password", user, self.domain, password)
        if result.returncode != 0:
            output, shown = result.stdout + result.stderr, f"register {user} {self.domain}"
            raise EjabberdCommandFailed(shown, returncode=result.returncode, output=output)
        return self.jid(user)

    def _ctl(self, *command: str) -> subprocess.CompletedProcess[str]:
        run = subprocess.run
        return run(self._ctl_command(*command), capture_output=True, text=True, check=False)

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` of ejabberd's log (and of its console output)."""
        tail = [*_read(self.console_path).splitlines(), *_read(self.log_path).splitlines()]
        return "\n".join(tail[-lines:]) or "(no log written)"


def _check_reachable(workdir: Path) -> None:
    # The workdir itself is chowned to the ejabberd user; every directory above it must let
    # that user through (pytest's tmp_path, under a 0700 directory of root, does not).
    for directory in workdir.resolve().parents:
        if not directory.stat().st_mode & stat.S_IXOTH:
            raise EjabberdWorkdirUnreachable(workdir, blocked_at=directory)


def _read(path: Path, offset: int = 0) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as file:
        file.seek(offset)
        return file.read().decode(errors="replace")


def _kill(pid: int, signum: signal.Signals) -> None:
    # A negative pid signals the process group.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
