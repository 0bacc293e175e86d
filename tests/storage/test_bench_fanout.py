"""``pubsub-cache bench fanout --quick`` runs end to end and checks its own result.

Its figures are read by hand from a full run (no assertion on sizes here beyond what the
bench itself checks).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pubsub_cache.ops.bench import fanout
from pubsub_cache.ops.bench.report import BenchFailure
from pubsub_cache.projector.runner import Projector

pytestmark = [pytest.mark.slow]


def test_the_quick_run_exits_0_and_ends_with_one_ratio_line_per_backend() -> None:
    command = [str(Path(sys.executable).parent / "pubsub-cache"), "bench", "fanout", "--quick"]
    result = subprocess.run(
        command, capture_output=True, text=True, env=dict(os.environ), timeout=120
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    postgres = os.environ.get("PUBSUB_CACHE_TEST_POSTGRES_URL")
    backends = ["sqlite", "postgresql"] if postgres else ["sqlite"]
    ratios = lines[-len(backends) :]
    assert [line.rpartition("backend=")[2] for line in ratios] == backends
    assert all(line.startswith("ratio=") and " target=0.5 " in line for line in ratios)
    for backend in backends:
        assert {int(line.split()[1]) for line in lines if line.split()[:1] == [backend]} == {
            1,
            10,
            200,
        }


def test_views_the_projector_did_not_write_fail_the_bench(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Projector, "catch_up", lambda self: 0)

    with pytest.raises(BenchFailure, match=r"sqlite: 0 views of items \(expected 20\)"):
        fanout.run(quick=True, postgres_url=None)
