"""The one settings object, built at an entry point from the environment and an optional TOML file.

Precedence: environment variables (``PUBSUB_CACHE_*``) over the TOML file over defaults. The TOML
file uses the same names in lower case without the prefix (``database_url = "..."``). A bad value
raises :class:`ConfigError` naming the variable (or file key) and what was wrong.

Many accounts (one daemon serving them all) are listed in an accounts file named by
``accounts_file``, read when the settings are built (and again on SIGHUP by the daemon)::

    [[account]]
    jid = "romeo@montague.lit"
    password_file = "/run/secrets/romeo"   # or password = "...", or password_command = [...]
    # xmpp_host, xmpp_port, xmpp_tls: this account's own, over the shared settings

The single account of ``jid``/``password`` still works, beside the file's or alone.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, cast

from pubsub_cache.errors import PubsubCacheError

from .jid import bare_jid
from .secrets import PASSWORD_KEYS, PasswordCommand, account_password

PREFIX = "PUBSUB_CACHE_"
TlsMode = Literal["starttls", "direct", "none"]
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_TLS_MODES = ("starttls", "direct", "none")
LogFormat = Literal["auto", "json", "text"]
_LOG_FORMATS = ("auto", "json", "text")


class ConfigError(PubsubCacheError):
    """Raised when a setting is missing or malformed."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        self.problem = problem
        super().__init__(f"bad setting {name}: {problem}")


def default_database_url(environ: Mapping[str, str]) -> str:
    """An SQLite file in the user's XDG data directory."""
    home = Path(environ.get("HOME") or Path.home())
    base = environ.get("XDG_DATA_HOME") or str(home / ".local" / "share")
    return f"sqlite:///{Path(base) / 'pubsub-cache' / 'cache.sqlite3'}"


@dataclass(frozen=True, kw_only=True)
class AccountSettings:
    """One account of the daemon: its JID, password and how to reach its server."""

    jid: str
    password: str = field(default="", repr=False)
    password_command: PasswordCommand | None = None
    xmpp_host: str | None = None
    xmpp_port: int | None = None
    xmpp_tls: TlsMode = "starttls"

    def secret(self) -> str:
        """The password: as given, or printed by ``password_command``, run now (when a
        connection needs it); a failing command is a :class:`ConfigError` naming the account."""
        if self.password_command is None:
            return self.password
        try:
            return self.password_command.run()
        except ValueError as exc:
            raise ConfigError(_label("accounts_file"), f"account {self.jid}: {exc}") from None


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
    metrics_address: str = "127.0.0.1"
    """Where the metrics endpoint listens: an IPv4 or IPv6 address, or a host name."""
    log_format: LogFormat = "auto"
    """``json`` lines, ``text`` lines, or ``auto``: text on a terminal, JSON otherwise."""
    accounts_file: Path | None = None
    accounts: tuple[AccountSettings, ...] = ()
    """The accounts of ``accounts_file``, as they were when the settings were built."""
    database_is_default: bool = False
    """Whether ``database_url`` is the default location (whose folder may be created)."""

    def all_accounts(self) -> tuple[AccountSettings, ...]:
        """Every configured account: ``jid``/``password`` (when set), then the file's (an
        account in both is the file's)."""
        listed = {account.jid for account in self.accounts}
        single: tuple[AccountSettings, ...] = ()
        if self.jid and self.password and self.jid not in listed:
            single = (
                AccountSettings(
                    jid=self.jid,
                    password=self.password,
                    xmpp_host=self.xmpp_host,
                    xmpp_port=self.xmpp_port,
                    xmpp_tls=self.xmpp_tls,
                ),
            )
        return single + self.accounts

    def account(self, jid: str) -> AccountSettings | None:
        """The configured account ``jid`` (its password and server), or ``None``."""
        return next((each for each in self.all_accounts() if each.jid == jid), None)

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
    names = {each.name for each in fields(Settings)} - {"database_is_default", "accounts"}
    for name in names:
        value = env.get(PREFIX + name.upper())
        if value is not None and value != "":
            raw[name] = value
    unknown = set(raw) - names
    if unknown:
        raise ConfigError(f"{config_file}", f"unknown keys {', '.join(sorted(unknown))}")
    database_url = _text(raw, "database_url")
    xmpp_host, xmpp_port = _text(raw, "xmpp_host"), _port(raw, "xmpp_port")
    xmpp_tls = cast(TlsMode, _choice(raw, "xmpp_tls", _TLS_MODES))
    accounts_file = _path(raw, "accounts_file", relative_to=config_file)
    shared = AccountSettings(
        jid="", password="", xmpp_host=xmpp_host, xmpp_port=xmpp_port, xmpp_tls=xmpp_tls
    )
    return Settings(
        database_url=_database_url(database_url or default_database_url(env)),
        database_is_default=not database_url,
        jid=_jid(raw),
        password=_text(raw, "password"),
        xmpp_host=xmpp_host,
        xmpp_port=xmpp_port,
        xmpp_tls=xmpp_tls,
        accounts_file=accounts_file,
        accounts=() if accounts_file is None else read_accounts(accounts_file, shared),
        log_level=_choice(raw, "log_level", _LOG_LEVELS, upper=True) or "INFO",
        metrics_port=_port(raw, "metrics_port"),
        metrics_address=_address(raw, "metrics_address") or "127.0.0.1",
        log_format=cast(LogFormat, _choice(raw, "log_format", _LOG_FORMATS)),
    )


def read_accounts(path: Path, shared: AccountSettings) -> tuple[AccountSettings, ...]:
    """The ``[[account]]`` entries of the accounts file ``path``, over the ``shared`` server
    settings; a :class:`ConfigError` names the file and the first bad entry."""
    label = f"{_label('accounts_file')} ({path})"
    raw = _read_toml(path, label=label)
    unknown = set(raw) - {"account"}
    if unknown:
        raise ConfigError(
            label, f"unknown keys {', '.join(sorted(unknown))} (expected [[account]])"
        )
    entries = raw.get("account", [])
    if not isinstance(entries, list):
        raise ConfigError(label, "expected [[account]] tables")
    accounts: dict[str, AccountSettings] = {}
    for number, entry in enumerate(entries, start=1):
        jid = entry.get("jid") if isinstance(entry, dict) else None
        name = f"account {number}" + (f" ({jid})" if isinstance(jid, str) else "")
        try:
            account = _account(entry, shared, path.parent)
        except ConfigError as exc:
            key = exc.name.removeprefix(PREFIX).lower()
            raise ConfigError(label, f"{name}: {key}: {exc.problem}") from None
        except ValueError as exc:
            raise ConfigError(label, f"{name}: {exc}") from None
        if account.jid in accounts:
            raise ConfigError(label, f"account {number} ({account.jid}): listed twice")
        accounts[account.jid] = account
    return tuple(accounts.values())


def _account(entry: object, shared: AccountSettings, folder: Path) -> AccountSettings:
    if not isinstance(entry, dict):
        raise ValueError(f"expected a table, got {entry!r}")
    unknown = set(entry) - {*_ACCOUNT_KEYS, *PASSWORD_KEYS, "jid"}
    if unknown:
        raise ValueError(f"unknown keys {', '.join(sorted(unknown))}")
    jid = _text(entry, "jid")
    if not jid:
        raise ValueError("no jid")
    jid = bare_jid(jid)
    password = account_password(entry, folder)
    return AccountSettings(
        jid=jid,
        password=password if isinstance(password, str) else "",
        password_command=None if isinstance(password, str) else password,
        xmpp_host=_text(entry, "xmpp_host") or shared.xmpp_host,
        xmpp_port=_port(entry, "xmpp_port") or shared.xmpp_port,
        xmpp_tls=cast(TlsMode, _choice(entry, "xmpp_tls", _TLS_MODES, default=shared.xmpp_tls)),
    )


_ACCOUNT_KEYS = ("xmpp_host", "xmpp_port", "xmpp_tls")


def _read_toml(path: Path, *, label: str | None = None) -> dict[str, object]:
    what = "config file" if label is None else "file"
    label = label or str(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(label, f"cannot read the {what}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(label, f"not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
        raise ConfigError(label, problem) from exc


def _path(raw: Mapping[str, object], name: str, *, relative_to: Path | None) -> Path | None:
    """A file named by a setting; relative to ``relative_to`` (a file's folder) if given."""
    text = _text(raw, name)
    if text is None:
        return None
    path = Path(text).expanduser()
    if relative_to is not None and not path.is_absolute():
        path = (relative_to if relative_to.is_dir() else relative_to.parent) / path
    return path


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


def _address(raw: Mapping[str, object], name: str) -> str | None:
    """An address to listen on: an IP address (an IPv6 one with or without brackets) or a host
    name; a typo must fail here, not when the daemon binds after connecting."""
    text = _text(raw, name)
    if text is None:
        return None
    address = text.strip()
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        pass
    # A name's last label is never all digits (RFC 3696 §2): 1.2.3.4.5 is a mistyped address.
    if not _HOST_NAME.fullmatch(address) or address.rstrip(".").rpartition(".")[2].isdigit():
        raise ConfigError(_label(name), f"expected an IP address or a host name, got {text!r}")
    return address


#: A DNS host name: dot-separated labels of letters, digits and inner hyphens.
_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


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
    raw: Mapping[str, object],
    name: str,
    allowed: tuple[str, ...],
    *,
    upper: bool = False,
    default: str | None = None,
) -> str:
    value = _text(raw, name)
    if value is None:
        return default or (allowed[0] if not upper else "INFO")
    value = value.upper() if upper else value.lower()
    if value not in allowed:
        raise ConfigError(_label(name), f"expected one of {', '.join(allowed)}, got {value!r}")
    return value
