"""Printing benchmark results: an aligned table, then figures as ``name=value`` lines."""

from __future__ import annotations

from collections.abc import Sequence

from pubsub_cache.errors import PubsubCacheError


class BenchFailure(PubsubCacheError):
    """Raised when a benchmark's own check of its result fails: a fast wrong answer."""


def best_rate(runs: Sequence[float]) -> float:
    """The best of several rates: the run least disturbed by the rest of the machine."""
    return max(runs)


def print_ratio(ratio: float, target: float, backend: str) -> None:
    """The closing line of a benchmark, one per backend: ``ratio=X target=Y backend=B``."""
    print(f"ratio={ratio:.2f} target={target:g} backend={backend}")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """An aligned plain-text table on standard output."""
    cells = [[str(h) for h in headers]] + [[_cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for number, row in enumerate(cells):
        print("  ".join(value.rjust(width) for value, width in zip(row, widths, strict=True)))
        if number == 0:
            print("  ".join("-" * width for width in widths))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"
    return str(value)
