"""The shipped service files: hardened, valid to systemd, with a user entry and documentation
that exist once the package is installed as the unit says.

systemd's own tools judge them (``systemd-analyze security --offline``, ``verify``,
``systemd-sysusers --dry-run``); a test skips only when the tool is not on the machine.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from importlib.resources import files
from pathlib import Path

import pytest

SYSTEMD = files("pubsub_cache.ops").joinpath("systemd")
UNIT = Path(str(SYSTEMD.joinpath("pubsub-cache.service")))
SYSUSERS = Path(str(SYSTEMD.joinpath("pubsub-cache.conf")))
ROOT = Path(__file__).resolve().parents[2]

#: ``systemd-analyze security`` scores 0 (locked down) to 10 (exposed); 6.4 before hardening.
MAX_EXPOSURE = 3.0


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found


def settings(unit: Path) -> dict[str, list[str]]:
    """Each key of the unit with its values in order (a key may be given several times)."""
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_the_unit_is_exposed_little() -> None:
    done = subprocess.run(
        [tool("systemd-analyze"), "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )

    score = re.search(r"Overall exposure level for pubsub-cache\.service: ([\d.]+)", done.stdout)
    assert score is not None, done.stdout + done.stderr
    assert float(score.group(1)) <= MAX_EXPOSURE, done.stdout


def test_systemd_finds_nothing_wrong_in_the_unit(tmp_path: Path) -> None:
    # verify checks that ExecStart= is executable: point it at this environment's program.
    program = Path(sys.executable).parent / "pubsub-cache"
    text = UNIT.read_text().replace("/opt/pubsub-cache/venv/bin/pubsub-cache", str(program))
    unit = tmp_path / UNIT.name
    unit.write_text(text)

    done = subprocess.run(
        [tool("systemd-analyze"), "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )

    # An unknown or misspelt key is only a warning: any message fails the test.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_unit_keeps_what_the_daemon_needs() -> None:
    unit = settings(UNIT)

    assert set(unit["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert unit["StateDirectory"] == ["pubsub-cache"]
    assert unit["Environment"] == [
        "XDG_DATA_HOME=/var/lib",
        "PUBSUB_CACHE_CONFIG=/etc/pubsub-cache/config.toml",
    ]
    # No private network (XMPP, PostgreSQL), no IP allow list (XMPP servers are anywhere), no
    # /proc subset (prometheus_client's process metrics read /proc/stat).
    assert {"PrivateNetwork", "IPAddressDeny", "ProcSubset"} & unit.keys() == set()
    # ProtectSystem=strict leaves the state directory writable, nothing else.
    assert "ReadWritePaths" not in unit
    assert unit["RestartPreventExitStatus"] == ["2 3"]


def test_the_service_user_is_declared_for_systemd_sysusers(tmp_path: Path) -> None:
    user = settings(UNIT)["User"]

    done = subprocess.run(
        [tool("systemd-sysusers"), "--dry-run", f"--root={tmp_path}", str(SYSUSERS)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert f"Creating user '{user[0]}'" in done.stdout + done.stderr
    assert settings(UNIT)["Group"] == user


@pytest.mark.slow
def test_the_documentation_the_unit_names_is_installed_by_pip(tmp_path: Path) -> None:
    venv = "/opt/pubsub-cache/venv"
    unit = settings(UNIT)
    assert unit["ExecStart"][0].startswith(f"{venv}/bin/")
    documentation = unit["Documentation"][0].removeprefix(f"file://{venv}/")
    # A wheel of this source tree (copied: a build here would share build/ with other runs).
    source = tmp_path / "source"
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__")
    )
    build = ["wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist")]
    subprocess.run(
        [sys.executable, "-m", "pip", *build, str(source)], capture_output=True, check=True
    )
    (wheel,) = (tmp_path / "dist").glob("pubsub_cache-*.whl")

    with zipfile.ZipFile(wheel) as archive:
        # What pip installs under the environment's prefix (its "data" scheme).
        data = {
            name.split("/data/", 1)[1]: archive.read(name)
            for name in archive.namelist()
            if ".data/data/" in name
        }

    assert data.get(documentation) == (ROOT / "README.md").read_bytes()
