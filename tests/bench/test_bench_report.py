"""The benchmark's report lists every metric the issue asks for, from a tiny synthetic result (no
services, no timing: the bench itself is not part of the test suite)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.__main__ import merge_drain
from bench._report import METRICS, render, targets
from bench._workload import assign_paths, parse_mix, percentile, sustained_rate


def _scenario(rate: float) -> dict[str, Any]:
    usage = {"cpu_pct": 50.0, "rss_mib": 80.0}
    return {
        "line_items": 10,
        "offered_items_per_s": None,
        "items_per_s": rate,
        "overall_items_per_s": rate,
        **{f"{k}_p{q}_ms": 10.0 * q for k in ("received", "done") for q in (50, 95, 99)},
        "provider_calls_per_item": 4.0,
        "commits_per_item": 20.0,
        "write_xacts_per_item": 15.0,
        "wal_kib_per_item": 9.0,
        "usage": {role: usage for role in ("worker", "sandbox", "postgres", "kafka", "bench")},
        "failed": 0,
        "finished": True,
        "mix": "assigned 100%",
        "workers": 1,
        "curve": [0.1, 0.2],
    }


def results() -> dict[str, Any]:
    names = (
        "zero_latency",
        "half_load",
        "realistic_latency",
        "two_workers",
        "ours_assigned",
        "dbos_assigned",
    )
    recovery = {
        "line_items": 10,
        "in_flight_at_kill": 7,
        "restart_to_first_change_s": 1.0,
        "recovery_s": 1.2,
        "resumed_p50_s": 1.5,
        "all_resumed_s": 2.0,
        "all_done_after_kill_s": 3.0,
        "failed": 0,
    }
    return {
        "machine": {"nproc": 2, "cpu_model": "test", "memory_gib": 1, "python": "3.11", "kernel": "x"},
        "load": [{"when": "start", "uptime": "load average: 1.00", "others": []}],
        "pg_limit": {
            "asyncpg": {"commits_per_s": 800.0, "concurrency": 16},
            "pgbench": {"commits_per_s": 1000.0, "clients": 16},
        },
        "scenarios": {
            **{name: _scenario(20.0) for name in names},
            "recovery_same_id": recovery,
            "recovery_new_id": recovery,
            "drain": {
                "line_items": 100,
                "drain_s": 5.0,
                "intake_s": 1.0,
                "items_per_s": 20.0,
                "extrapolated_100k_s": 5000.0,
                "commits_per_item": 20.0,
                "usage": {},
            },
        },
        "options": {},
    }


def test_every_metric_and_target_is_in_the_report() -> None:
    doc = render(results(), notes="notes")
    for _, label, _ in METRICS:
        assert label in doc
    for needle in (
        "ours ÷ the Postgres limit",
        "ours ÷ DBOS",
        "2 workers ÷ 1 worker",
        "every** in-flight",
        "all done after the worker process was started",
        "step-shaped commits/s",
        "load at start",
    ):
        assert needle in doc, needle
    assert [row[2] for row in targets(results())] == ["**missed**", "**missed**", "**missed**", "**met**"]


def test_a_large_drain_from_its_own_run_is_reported_beside_this_runs(tmp_path: Path) -> None:
    curve = [i / 100 for i in range(1, 20_001)]  # 20,000 done at 100/s
    other = {
        "command": "python -m bench --drain-items 20000",
        "started": "2026-11-26 03:20:30 UTC",
        "commit": "abc1234",
        "scenarios": {
            "drain": {
                "line_items": 20_000,
                "done": 20_000,
                "finished": True,
                "drain_s": 200.0,
                "intake_s": 40.0,
                "items_per_s": 100.0,
                "commits_per_item": 18.0,
                "usage": {},
                "load": "load average: 2.00",
                "curve": curve,
            }
        },
    }
    path = tmp_path / "drain.json"
    path.write_text(json.dumps(other))
    merged = results()
    merge_drain(merged, path)
    doc = render(merged, notes="notes")
    assert "| | 100 line items | 20,000 line items |" in doc
    assert "commit `abc1234`" in doc
    # the progress table: a row per tenth of the backlog, at the rate of that tenth
    assert "| 2,000 | 0.3 | 100.0 |" in doc
    assert "| 20,000 | 3.3 | 100.0 |" in doc
    # the merged results keep the tenths, not a float per line item
    assert "curve" not in merged["scenarios"]["drain_large"]


def test_workload_helpers() -> None:
    assert parse_mix("assigned=3,port=1") == {"assigned": 3, "port": 1}
    paths = assign_paths(8, {"assigned": 3, "port": 1})
    assert paths.count("assigned") == 6
    assert paths.count("port") == 2
    assert percentile([1.0, 2.0, 3.0], 50) == 2.0
    assert sustained_rate([i / 10 for i in range(101)]) == 10.0
