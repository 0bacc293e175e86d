"""``pubsub-cache bench reconcile`` works in its smallest form: both servers, one repetition.

The suite only proves the benchmark runs and checks its own results; its figures are read by
hand from a full run (no timed assertion here).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pubsub_cache.ops.bench import reconcile
from pubsub_cache.xmpp.directory import NodeRef
from pubsub_cache.xmpp.pubsub import PubsubClient
from pubsub_cache.xmpp.reconcile import Reconciler

pytestmark = [pytest.mark.xmpp, pytest.mark.slow]


def test_the_smallest_run_exits_0_and_ends_with_the_ratio_lines(
    prosody_installed: None, ejabberd_installed: None
) -> None:
    command = [str(Path(sys.executable).parent / "pubsub-cache"), "bench", "reconcile"]
    result = subprocess.run(
        [*command, "--items", "200", "--repeat", "1"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    backends = 2 if os.environ.get("PUBSUB_CACHE_TEST_POSTGRES_URL") else 1
    ratios = lines[-backends:]
    assert all(line.startswith("ratio=") and " target=5 backend=" in line for line in ratios)
    assert ratios[0].endswith("backend=sqlite")
    assert not any(line.startswith("ratio=") for line in lines[:-backends])
    for server in ("prosody", "ejabberd"):
        assert f"{server} sqlite: full/probe=" in result.stdout


def test_a_reconciliation_that_misses_an_eviction_fails_the_bench(
    prosody_installed: None, ejabberd_installed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def sees_nothing(
        self: Reconciler, client: PubsubClient, ref: NodeRef, why: str = "request"
    ) -> bool:
        return False

    monkeypatch.setattr(Reconciler, "check", sees_nothing)

    with pytest.raises(reconcile.BenchFailure, match=r"after an eviction logged \[\]"):
        reconcile.run(quick=True, items=200, repeat=1, postgres_url=None)
