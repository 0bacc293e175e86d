"""The one settings object, built at an entry point from the environment and an optional TOML file.

Precedence: environment variables (``PUBSUB_CACHE_*``) over the TOML file over defaults. The TOML
file uses the same names in lower case without the prefix (``database_url = "..."``). A bad value
raises :class:`ConfigError` naming the variable (or file key) and what was wrong.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal, cast

from pubsub_cache.errors import PubsubCacheError

PREFIX = "PUBSUB_CACHE_"
TlsMode = Literal["starttls", "direct", "none"]
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(PubsubCacheError):
    """Raised when a setting is missing or malformed."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        super().__init__(f"bad setting {name}: {problem}")


def default_database_url(environ: Mapping[str, str]) -> str:
    """An SQLite file in the user's XDG data directory."""
    home = Path(environ.get("HOME") or Path.home())
    base = environ.get("XDG_DATA_HOME") or str(home / ".local" / "share")
    return f"sqlite:///{Path(base) / 'pubsub-cache' / 'cache.sqlite3'}"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything an entry point needs to know; passed down, never read from globals."""

    database_url: str
    jid: str | None = None
    password: str | None = None
    xmpp_host: str | None = None
    xmpp_port: int | None = None
    xmpp_tls: TlsMode = "starttls"
    log_level: str = "INFO"
    metrics_port: int | None = None
    database_is_default: bool = False
    """Whether ``database_url`` is the default location (whose folder may be created)."""

    def require_account(self) -> tuple[str, str]:
        """The JID and password, or a :class:`ConfigError` saying what to set."""
        if not self.jid or not self.password:
            raise ConfigError(
                f"{PREFIX}JID",
                f"no XMPP account configured: set {PREFIX}JID and {PREFIX}PASSWORD "
                "(or jid and password in the --config file)",
            )
        return self.jid, self.password


def load_settings(
    environ: Mapping[str, str] | None = None, config_file: Path | None = None
) -> Settings:
    """Settings from ``environ`` (default: ``os.environ``) over ``config_file``'s values."""
    env = os.environ if environ is None else environ
    raw: dict[str, object] = {}
    if config_file is not None:
        raw.update(_read_toml(config_file))
    names = {field.name for field in fields(Settings)} - {"database_is_default"}
    for name in names:
        value = env.get(PREFIX + name.upper())
        if value is not None and value != "":
            raw[name] = value
    unknown = set(raw) - names
    if unknown:
        raise ConfigError(f"{config_file}", f"unknown keys {', '.join(sorted(unknown))}")
    database_url = _text(raw, "database_url")
    return Settings(
        database_url=_database_url(database_url or default_database_url(env)),
        database_is_default=not database_url,
        jid=_jid(raw),
        password=_text(raw, "password"),
        xmpp_host=_text(raw, "xmpp_host"),
        xmpp_port=_port(raw, "xmpp_port"),
        xmpp_tls=cast(TlsMode, _choice(raw, "xmpp_tls", ("starttls", "direct", "none"))),
        log_level=_choice(raw, "log_level", _LOG_LEVELS, upper=True) or "INFO",
        metrics_port=_port(raw, "metrics_port"),
    )


def _read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the config file: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
        raise ConfigError(str(path), problem) from exc


def _label(name: str) -> str:
    return PREFIX + name.upper()


def _text(raw: Mapping[str, object], name: str) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(_label(name), f"expected a string, got {value!r}")
    return value


def _database_url(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        # make_url raises ValueError for a port that is not a number (postgresql://h:abc/x).
        problem = f"not a database URL: {_hide_password(url)!r} ({exc})"
        raise ConfigError(_label("database_url"), problem) from exc
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            _label("database_url"),
            f"{parsed.get_backend_name()!r} is not supported (use sqlite:/// or postgresql://)",
        )
    return url


def _hide_password(url: str) -> str:
    # The URL could not be parsed, so hide what sits between "user:" and "@" by hand.
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def _jid(raw: Mapping[str, object]) -> str | None:
    jid = _text(raw, "jid")
    if jid is None:
        return None
    try:
        return bare_jid(jid)
    except ValueError as exc:
        raise ConfigError(_label("jid"), str(exc)) from None


def bare_jid(text: str) -> str:
    """``text`` checked as a bare account JID (RFC 7622, by slixmpp's rules) and normalised;
    raises :class:`ValueError` saying what is wrong."""
    from slixmpp.jid import JID, InvalidJID  # imported here: ``--help`` need not load slixmpp

    try:
        jid = JID(text)
    except InvalidJID as exc:
        raise ValueError(f"{text!r} is not a valid JID: {exc}") from None
    if not jid.user or jid.resource:
        raise ValueError(f"expected a bare JID like user@example.org, got {text!r}")
    return str(jid.bare)


def _port(raw: Mapping[str, object], name: str) -> int | None:
    value = raw.get(name)
    if value is None:
        return None
    try:
        port = int(str(value))
    except ValueError:
        raise ConfigError(_label(name), f"expected a port number, got {value!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(_label(name), f"port {port} is out of range 1-65535")
    return port


def _choice(
    raw: Mapping[str, object], name: str, allowed: tuple[str, ...], *, upper: bool = False
) -> str:
    value = _text(raw, name)
    if value is None:
        return allowed[0] if not upper else "INFO"
    value = value.upper() if upper else value.lower()
    if value not in allowed:
        raise ConfigError(_label(name), f"expected one of {', '.join(allowed)}, got {value!r}")
    return value
