"""``pubsub-cache bench accounts --quick`` runs end to end and checks its own result.

The suite only proves the benchmark runs (a daemon process serving 50 accounts, a fan-out to
all of them) and fails when its result is wrong; its figures are read by hand from a full run
(no timed assertion here).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from pubsub_cache.ops.bench import accounts
from pubsub_cache.ops.bench.report import BenchFailure
from pubsub_cache.ops.dev.prosody import LocalProsody

pytestmark = [pytest.mark.xmpp, pytest.mark.slow]


def test_the_quick_run_exits_0_and_ends_with_one_ratio_line_per_backend(
    prosody_installed: None,
) -> None:
    command = [str(Path(sys.executable).parent / "pubsub-cache"), "bench", "accounts", "--quick"]
    result = subprocess.run(
        command, capture_output=True, text=True, env=dict(os.environ), timeout=120
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    backends = (
        ["sqlite", "postgresql"] if os.environ.get("PUBSUB_CACHE_TEST_POSTGRES_URL") else ["sqlite"]
    )
    ratios = lines[-len(backends) :]
    assert [line.rpartition("backend=")[2] for line in ratios] == backends
    assert all(line.startswith("ratio=") and " target=10 " in line for line in ratios)
    assert not any(line.startswith("ratio=") for line in lines[: -len(backends)])
    for backend in backends:  # the single account's run and the 50 accounts' fan-out
        assert any(line.split()[:2] == [backend, "1"] for line in lines)
        assert any(line.split()[:2] == [backend, "50"] for line in lines)


def test_an_account_that_cannot_log_in_fails_the_bench(
    prosody_installed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_many = LocalProsody.register_many

    def all_but_the_first_bench_account(
        self: LocalProsody, users: Sequence[str], password: str
    ) -> list[str]:
        return register_many(self, [user for user in users if user != "bench00000"], password)

    monkeypatch.setattr(LocalProsody, "register_many", all_but_the_first_bench_account)

    with pytest.raises(BenchFailure, match=r"0 of 1 accounts connected on sqlite"):
        accounts.run(quick=True, postgres_url=None)
