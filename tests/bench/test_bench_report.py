"""The benchmark's report lists every metric and target the issues ask for, from a tiny synthetic
result (no services, no timing: the bench itself is not part of the test suite)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.__main__ import merge_before, merge_drain
from bench._report import METRICS, render, targets
from bench._workload import assign_paths, first_minute, parse_mix, percentile, sustained_rate


def _scenario(rate: float, *, cpu_ms: float = 40.0) -> dict[str, Any]:
    usage = {"cpu_s": 1.0, "cpu_pct": 50.0, "rss_mib": 80.0}
    return {
        "commit": "abc1234",
        "line_items": 10,
        "done": 10,
        "offered_items_per_s": None,
        "items_per_s": rate * 2,
        "overall_items_per_s": rate,
        "elapsed_s": 10 / rate,
        **{f"{k}_p{q}_ms": 10.0 * q for k in ("received", "done", "intake", "relay") for q in (50, 95, 99)},
        "provider_calls_per_item": 4.0,
        "commits_per_item": 20.0,
        "write_xacts_per_item": 15.0,
        "statements_per_item": 50.0,
        "wal_kib_per_item": 9.0,
        "status_events_per_item": 5.0,
        "machine_cpu_ms_per_item": cpu_ms,
        "worker_cpu_ms_per_item": cpu_ms / 3,
        "host_cpu_ms_per_item": cpu_ms * 1.1,
        "cpu_ms_per_item": {role: cpu_ms / 5 for role in ("worker", "sandbox", "postgres", "kafka", "bench")},
        "usage": {role: usage for role in ("worker", "sandbox", "postgres", "kafka", "bench")},
        "failed": 0,
        "finished": True,
        "mix": "assigned 100%",
        "workers": 1,
        "webhooks": True,
        "curve": [0.1, 0.2],
    }


def results() -> dict[str, Any]:
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
    half = {**_scenario(10.0), "offered_items_per_s": 10.0, "capacity_items_per_s": 20.0, "line_items": 2000}
    peer_run = _scenario(10.0, cpu_ms=50.0)
    return {
        "commit": "abc1234",
        "machine": {"nproc": 2, "cpu_model": "test", "memory_gib": 1, "python": "3.11", "kernel": "x"},
        "load": [{"when": "start", "uptime": "load average: 1.00", "others": []}],
        "statements": {"enabled": True, "track": "top", "track_utility": "on"},
        "pg_limit": {
            "kind": "single_row",
            "asyncpg": [{"connections": n, "commits_per_s": 1000.0 * n} for n in (1, 8, 16)],
            "pgbench": [{"connections": n, "commits_per_s": 1500.0 * n} for n in (1, 8, 16)],
            "duration_s": 5.0,
        },
        "peer_comparison": {
            "peer": "DBOS Transact 3.4.0",
            "orders": 5,
            "items": 2,
            "webhooks": False,
            "provider_connections": 16,
            "commit": "abc1234",
            "runs": {"ours": [_scenario(20.0)] * 3, "peer": [peer_run] * 3},
            "median": {"ours": _scenario(20.0), "peer": peer_run},
            "ratio": 2.0,
        },
        "scenarios": {
            "zero_latency": _scenario(20.0),
            "assigned": _scenario(400.0, cpu_ms=5.0),
            "half_load": half,
            "realistic_latency": _scenario(20.0),
            "two_workers": _scenario(25.0),
            "recovery_same_id": recovery,
            "recovery_new_id": recovery,
            "drain": {
                "commit": "abc1234",
                "line_items": 100,
                "done": 100,
                "drain_s": 5.0,
                "intake_s": 1.0,
                "overall_items_per_s": 20.0,
                "items_per_s": 25.0,
                "first_done_s": 2.0,
                "done_first_minute": 100,
                "worker_rss_peak_mib": 90.0,
                "worker_rss_at_1min_mib": 85.0,
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
        "the headline",
        "not the headline",
        "The DBOS peer at equal work",
        "**median, peer**",
        "Ours ÷ the peer (medians of the headline): 2.00×",
        "Two workers vs one",
        "every** in-flight",
        "all done after the worker process was started",
        "line items done in the first minute",
        "**extrapolated** from 100 line items",
        "| 16 | 16,000 | 24,000 |",  # the single-row limit at 16 connections
        "write commits/s",
        "load at start",
        "commit measured",
    ):
        assert needle in doc, needle
    outcomes = {row[0].split(",")[0][:30]: row[2] for row in targets(results())}
    assert [row[2] for row in targets(results())] == [
        "**missed**",  # 20/s mixed
        "**met**",  # 400/s assigned only
        "**missed**",  # 40 ms machine CPU (mixed)
        "**missed**",  # 13 ms worker CPU
        "**missed**",  # 20 commits
        "**missed**",  # p99 990 ms
        "**missed**",  # 2× the peer
        "**missed**",  # 100k extrapolated to 83 min
        "**met**",  # 2 workers 25/s vs 20/s, CPU flat
        "**met**",  # recovery 1.5 s
    ], outcomes


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


def test_the_before_run_is_shown_beside_this_one(tmp_path: Path) -> None:
    before = results()
    before["commit"] = "62e54bb"
    before["scenarios"]["zero_latency"]["overall_items_per_s"] = 10.0
    path = tmp_path / "before.json"
    path.write_text(json.dumps(before))
    merged = results()
    merge_before(merged, path)
    doc = render(merged, notes="notes")
    assert "| figure | before (`62e54bb`) | after (`abc1234`) | after ÷ before |" in doc
    assert "| line items/s to the last terminal event, mixed paths | 10.0 | 20.0 | 2.00 |" in doc
    assert "curve" not in merged["before"]["scenarios"]["zero_latency"]


def test_workload_helpers() -> None:
    assert parse_mix("assigned=3,port=1") == {"assigned": 3, "port": 1}
    paths = assign_paths(8, {"assigned": 3, "port": 1})
    assert paths.count("assigned") == 6
    assert paths.count("port") == 2
    assert percentile([1.0, 2.0, 3.0], 50) == 2.0
    assert sustained_rate([i / 10 for i in range(101)]) == 10.0
    assert first_minute([1.0, 59.9, 60.0, 61.0]) == 3
