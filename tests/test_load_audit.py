"""The load mix of bench/load.py, small and bounded, in CI: concurrent clients deciding, reading and requesting
augmentation against the real API process on SQLite and on Postgres; no 5xx, and every decision a client got
a 2xx for stands in the database exactly once. (The benchmark's figures come from the full run.)"""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.conftest import REPO_ROOT


def _load_bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_load", REPO_ROOT / "bench" / "load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_load"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.slow
def test_no_acknowledged_decision_is_lost_under_concurrent_load(any_settings, capsys) -> None:
    load = _load_bench()
    result = load.run_backend(
        "under-test",
        any_settings.resolved_database_url,
        str(any_settings.data_dir),
        clients=12,
        seconds=6,
        variants=1500,
    )
    assert result["http_5xx"] == 0, result["status"]
    assert result["acknowledged_decisions"] >= 20, result
    assert result["lost_decisions"] == 0 and result["duplicated_decisions"] == 0, result
    assert not result["transport_errors"], result["transport_errors"]
    # the augment requests of the mix are accepted: its annotators got 403 for every one (only leads may start
    # augmentation), so the mix measured no augment request
    augment = {status: n for status, n in result["status"].items() if status.startswith("POST augment")}
    assert set(augment) == {"POST augment 202"}, result["status"]
