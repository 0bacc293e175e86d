"""An account's password, from the accounts file: given inline, read from a file, or printed by
a command (a secret manager: ``password_command = ["pass", "show", "xmpp/romeo"]``).

Exactly one of the three is given. A command is checked when the accounts file is read, and run
only when a connection needs the password (the daemon's start and each SIGHUP, so a rotated
secret is picked up by a reload; ``sync --now``; a live read): a cached read never wakes the
secret manager. It runs without a shell, in the accounts file's folder, with no input; the first
line it prints is the password. Anything that goes wrong is a :class:`ValueError` naming the key
and the cause, never the secret.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: Seconds a password command may take (a secret manager may ask an agent).
COMMAND_TIMEOUT = 30.0

PASSWORD_KEYS = ("password", "password_file", "password_command")


@dataclass(frozen=True)
class PasswordCommand:
    """A program (and its arguments) that prints the password, run in ``folder``."""

    argv: tuple[str, ...]
    folder: Path

    def run(self) -> str:
        """The first line the program prints, or a :class:`ValueError` saying what went wrong."""
        return _run(list(self.argv), self.folder)


def account_password(entry: Mapping[str, object], folder: Path) -> str | PasswordCommand:
    """The password ``entry`` gives by one of :data:`PASSWORD_KEYS` (a command is returned
    checked, not run); relative paths are taken from ``folder`` (the accounts file's)."""
    given = [key for key in PASSWORD_KEYS if entry.get(key) is not None]
    if len(given) != 1:
        raise ValueError("give one of password, password_file or password_command")
    (key,) = given
    value = entry[key]
    if key == "password":
        if not isinstance(value, str):
            raise ValueError(f"password: expected a string, got {type(value).__name__}")
        return value
    if key == "password_file":
        if not isinstance(value, str):
            raise ValueError(f"password_file: expected a path, got {value!r}")
        return _read_file(_resolve(Path(value).expanduser(), folder))
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise ValueError(
            f"password_command: expected a list of strings (the program, then its arguments), "
            f"got {value!r}"
        )
    return PasswordCommand(tuple(str(argument) for argument in value), folder)


def _resolve(path: Path, folder: Path) -> Path:
    return path if path.is_absolute() else folder / path


def _read_file(path: Path) -> str:
    try:
        return path.read_text("utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read password_file {path}: {exc}") from None


def _run(argv: list[str], folder: Path) -> str:
    program = argv[0]
    try:
        done = subprocess.run(
            argv,
            cwd=folder,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise ValueError(f"password_command: {program} not found") from None
    except PermissionError:
        raise ValueError(f"password_command: {program} is not executable") from None
    except subprocess.TimeoutExpired:
        raise ValueError(
            f"password_command: {program} printed no password within {COMMAND_TIMEOUT:g} s"
        ) from None
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = f": {said[-1]}" if said else ""
        raise ValueError(f"password_command: {program} exited with {done.returncode}{reason}")
    try:
        lines = done.stdout.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"password_command: {program} printed no UTF-8 text") from None
    if not lines or not lines[0]:
        raise ValueError(f"password_command: {program} printed no password")
    return lines[0]
