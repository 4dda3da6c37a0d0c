"""The committed benchmark results, as the README quotes them and tools read them: each `bench/<name>.py`
benchmark has its `bench/results/<name>.json`, a list of {"metric", "value", "target", "unit"} rows (and
`lower_is_better` where it applies), every value a finite number, each metric named once."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
# modules the benchmarks import, and the GPU probe, whose figures exist only where a GPU was lent
NOT_BENCHMARKS = {"bench_env", "quality_data", "quality_stats", "synthetic", "gpu_probe"}
# a --quick run's results (git ignores them) are a smoke test, not a result
RESULTS = sorted(p for p in (BENCH / "results").glob("*.json") if "_detail" not in p.name and ".quick." not in p.name)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_every_benchmark_has_committed_results() -> None:
    benchmarks = {p.stem for p in BENCH.glob("*.py")} - NOT_BENCHMARKS
    assert benchmarks, "no benchmark scripts found"
    committed = {p.name.split(".")[0] for p in RESULTS}
    assert benchmarks <= committed, f"benchmarks without results in bench/results: {sorted(benchmarks - committed)}"


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.name)
def test_a_results_file_is_a_list_of_metric_rows(path: Path) -> None:
    rows = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(rows, list) and rows
    names = [row.get("metric") for row in rows]
    assert len(names) == len(set(names)), "a metric named twice"
    for row in rows:
        assert {"metric", "value", "target", "unit"} <= set(row), row
        assert isinstance(row["metric"], str) and row["metric"] and isinstance(row["unit"], str), row
        assert _number(row["value"]), row
        assert row["target"] is None or _number(row["target"]), row
        assert isinstance(row.get("lower_is_better", False), bool), row
