"""Settings from the environment and a TOML file: precedence, defaults, one clear error each."""

from __future__ import annotations

from pathlib import Path

import pytest

from pubsub_cache.ops.settings import ConfigError, load_settings


def test_defaults_put_the_database_in_the_xdg_data_directory(tmp_path: Path) -> None:
    settings = load_settings({"XDG_DATA_HOME": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path}/pubsub-cache/cache.sqlite3"
    assert settings.xmpp_tls == "starttls"
    assert settings.log_level == "INFO"
    assert settings.jid is None


def test_environment_overrides_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "cache.toml"
    config.write_text('jid = "file@example.org"\nxmpp_port = 5223\nlog_level = "debug"\n')
    settings = load_settings(
        {"PUBSUB_CACHE_JID": "env@example.org", "HOME": str(tmp_path)}, config_file=config
    )
    assert settings.jid == "env@example.org"
    assert settings.xmpp_port == 5223
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PUBSUB_CACHE_XMPP_PORT", "eighty", "bad setting PUBSUB_CACHE_XMPP_PORT: expected a port"),
        ("PUBSUB_CACHE_XMPP_PORT", "70000", "out of range"),
        ("PUBSUB_CACHE_XMPP_TLS", "ssl", "expected one of starttls, direct, none"),
        ("PUBSUB_CACHE_JID", "not-a-jid", "bad setting PUBSUB_CACHE_JID: expected a bare JID"),
        ("PUBSUB_CACHE_JID", "me@example.org/phone", "expected a bare JID"),
        ("PUBSUB_CACHE_LOG_LEVEL", "loud", "expected one of DEBUG"),
        ("PUBSUB_CACHE_DATABASE_URL", "mysql://x/y", "'mysql' is not supported"),
        ("PUBSUB_CACHE_DATABASE_URL", "::nonsense", "not a database URL"),
    ],
)
def test_a_malformed_value_names_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({variable: value})


def test_an_unreadable_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_settings({}, config_file=tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("jid = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({}, config_file=broken)


def test_unknown_keys_in_the_config_file_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "cache.toml"
    config.write_text('databse_url = "sqlite:///x"\n')
    with pytest.raises(ConfigError, match="unknown keys databse_url"):
        load_settings({}, config_file=config)


def test_require_account_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match="set PUBSUB_CACHE_JID and PUBSUB_CACHE_PASSWORD"):
        load_settings({}).require_account()
