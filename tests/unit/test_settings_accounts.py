"""The accounts file (issue 13): every entry over the shared server settings, one clear error
naming the bad entry, and the single account of jid/password beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pubsub_cache.ops.cli_daemon import xmpp_accounts
from pubsub_cache.ops.settings import AccountSettings, ConfigError, load_settings


def settings_with(tmp_path: Path, accounts: str, **environ: str) -> list[AccountSettings]:
    path = tmp_path / "accounts.toml"
    path.write_text(accounts)
    env = {"PUBSUB_CACHE_ACCOUNTS_FILE": str(path), "HOME": str(tmp_path), **environ}
    return list(load_settings(env).all_accounts())


def test_accounts_take_the_shared_server_settings_unless_they_name_their_own(
    tmp_path: Path,
) -> None:
    (tmp_path / "juliet.secret").write_text("balcony\n")
    accounts = settings_with(
        tmp_path,
        '[[account]]\njid = "Romeo@Montague.lit"\npassword = "rose"\n\n'
        '[[account]]\njid = "juliet@capulet.lit"\npassword_file = "juliet.secret"\n'
        'xmpp_host = "capulet.lit"\nxmpp_tls = "direct"\n',
        PUBSUB_CACHE_XMPP_HOST="127.0.0.1",
        PUBSUB_CACHE_XMPP_PORT="5222",
    )
    assert accounts == [
        AccountSettings(
            jid="romeo@montague.lit", password="rose", xmpp_host="127.0.0.1", xmpp_port=5222
        ),
        AccountSettings(
            jid="juliet@capulet.lit",
            password="balcony",
            xmpp_host="capulet.lit",
            xmpp_port=5222,
            xmpp_tls="direct",
        ),
    ]


def test_the_single_account_variables_still_work_beside_the_file(tmp_path: Path) -> None:
    accounts = settings_with(
        tmp_path,
        '[[account]]\njid = "romeo@montague.lit"\npassword = "rose"\n',
        PUBSUB_CACHE_JID="cache@example.org",
        PUBSUB_CACHE_PASSWORD="secret",
    )
    assert [a.jid for a in accounts] == ["cache@example.org", "romeo@montague.lit"]
    alone = load_settings({"PUBSUB_CACHE_JID": "cache@example.org", "PUBSUB_CACHE_PASSWORD": "x"})
    assert [a.jid for a in alone.all_accounts()] == ["cache@example.org"]


def test_the_accounts_file_is_named_in_the_config_file_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "accounts.toml").write_text('[[account]]\njid = "a@b.org"\npassword = "p"\n')
    config = tmp_path / "config.toml"
    config.write_text('accounts_file = "accounts.toml"\n')
    settings = load_settings({"HOME": str(tmp_path)}, config_file=config)
    assert settings.accounts_file == tmp_path / "accounts.toml"
    assert [a.jid for a in settings.accounts] == ["a@b.org"]


ONE = '[[account]]\njid = "a@b.org"\npassword = "p"\n'


@pytest.mark.parametrize(
    ("accounts", "message"),
    [
        (
            '[[account]]\njid = "a@b.org"\n',
            "account 1 \\(a@b.org\\): give one of password, password_file or password_command",
        ),
        (
            '[[account]]\njid = "a@b.org"\npassword = "p"\npassword_command = ["echo"]\n',
            "give one of password, password_file or password_command",
        ),
        ('[[account]]\njid = "a@b.org"\npassword_command = "pass"\n', "expected a list of str"),
        ('[[account]]\njid = "a@b.org"\npassword_command = []\n', "expected a list of strings"),
        (
            ONE + '[[account]]\njid = "x"\npassword = "p"\n',
            "account 2 \\(x\\): expected a bare JID",
        ),
        ('[[account]]\npassword = "p"\n', "account 1: no jid"),
        (
            '[[account]]\njid = "a@b.org"\npassword = "p"\nxmpp_port = "x"\n',
            "xmpp_port: expected a",
        ),
        ('[[account]]\njid = "a@b.org"\npassword = "p"\npasword = "p"\n', "unknown keys pasword"),
        ('[[account]]\njid = "a@b.org"\npassword_file = "missing"\n', "cannot read password_fi"),
        (
            ONE * 2,
            "account 2 \\(a@b.org\\): listed twice",
        ),
        ('[[acount]]\njid = "a@b.org"\n', "unknown keys acount"),
        ("[[account]\n", "not valid TOML"),
    ],
)
def test_a_bad_entry_is_named_in_one_line(tmp_path: Path, accounts: str, message: str) -> None:
    with pytest.raises(ConfigError, match="bad setting PUBSUB_CACHE_ACCOUNTS_FILE") as raised:
        settings_with(tmp_path, accounts)
    assert "\n" not in str(raised.value)
    assert raised.match(message)


def test_a_missing_accounts_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ACCOUNTS_FILE .*missing\.toml.*cannot read the file"):
        load_settings({"PUBSUB_CACHE_ACCOUNTS_FILE": str(tmp_path / "missing.toml")})


def test_a_password_command_gives_the_first_line_it_prints_run_in_the_files_folder(
    tmp_path: Path,
) -> None:
    (tmp_path / "vault").write_text("s3cret\nmetadata: not the password\n")
    accounts = settings_with(
        tmp_path,
        '[[account]]\njid = "a@b.org"\npassword_command = ["sh", "-c", "touch asked; cat vault"]\n',
    )
    # Reading the settings (every command does) does not wake the secret manager.
    assert not (tmp_path / "asked").exists()
    assert [(a.jid, a.secret()) for a in accounts] == [("a@b.org", "s3cret")]
    assert (tmp_path / "asked").exists()


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ('["no-such-program-here"]', "password_command: no-such-program-here not found"),
        ('["sh", "-c", "echo locked >&2; exit 3"]', "password_command: sh exited with 3: locked"),
        ('["true"]', "password_command: true printed no password"),
    ],
)
def test_a_failing_password_command_is_named_in_one_line_when_the_password_is_needed(
    tmp_path: Path, command: str, message: str
) -> None:
    (account,) = settings_with(
        tmp_path, f'[[account]]\njid = "a@b.org"\npassword_command = {command}\n'
    )
    with pytest.raises(ConfigError, match="bad setting PUBSUB_CACHE_ACCOUNTS_FILE") as raised:
        account.secret()
    assert "\n" not in str(raised.value)
    assert raised.match("account a@b.org: " + message)


def test_a_password_command_never_shows_the_secret_in_its_error(tmp_path: Path) -> None:
    script = '["sh", "-c", "echo hunter2; exit 1"]'
    (account,) = settings_with(
        tmp_path, f'[[account]]\njid = "a@b.org"\npassword_command = {script}\n'
    )
    with pytest.raises(ConfigError) as raised:
        account.secret()
    assert "exited with 1" in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_the_daemon_connects_with_what_the_password_command_prints(tmp_path: Path) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text('[[account]]\njid = "a@b.org"\npassword_command = ["echo", "from-vault"]\n')
    settings = load_settings({"PUBSUB_CACHE_ACCOUNTS_FILE": str(path), "HOME": str(tmp_path)})
    assert [(a.jid, a.password) for a in xmpp_accounts(settings)] == [("a@b.org", "from-vault")]
