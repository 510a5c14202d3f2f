"""`python -m bench`: start the local stack, run every scenario, write docs/benchmarks.md and its plot."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._deps import ROOT, ensure_bench_dependencies

SCENARIOS = ("limit", "zero", "half", "realistic", "scale", "dbos", "recovery", "drain", "profile")


def baseline_checkout(rev: str) -> Path:
    """The `orchestrator` package and migrations as of `rev`, in a temporary directory."""
    target = Path(tempfile.mkdtemp(prefix="orchestrator-baseline-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "orchestrator", "migrations"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def current_commit() -> str | None:
    """HEAD's short hash, `-dirty` when the measured code (package, migrations, bench) has changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            check=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "orchestrator", "migrations", "bench"],
            capture_output=True,
            check=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def merge_drain(results: dict[str, Any], path: Path) -> None:
    """Take the drain of another run's results (a 100k backlog takes half an hour here: it runs alone)."""
    other = json.loads(path.read_text())
    drain = other.get("scenarios", {}).get("drain")
    if not drain:
        raise SystemExit(f"{path}: no drain scenario in these results")
    from bench._report import tenths  # noqa: PLC0415 - needs the bench extra

    # its progress by tenths instead of a completion time per line item (100k floats)
    curve = drain.pop("curve", None) or []
    drain.setdefault("tenths", tenths(curve))
    results.setdefault("scenarios", {})["drain_large"] = drain
    results["drain_source"] = {
        "command": other.get("command", "?"),
        "started": other.get("started", "?"),
        "commit": other.get("commit", "?"),
        "load": drain.get("load", "?"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--orders", type=int, default=150, help="orders per load scenario (default 150)")
    parser.add_argument("--items", type=int, default=5, help="subscription line items per order (default 5)")
    parser.add_argument(
        "--mix",
        default="assigned=40,leased=20,port=15,port_temp=15,scheduled=10",
        help="paths and their weights (assigned, leased, port, port_temp, scheduled)",
    )
    parser.add_argument(
        "--realistic-orders", type=int, default=60, help="orders with 50–200 ms provider latency"
    )
    parser.add_argument("--recovery-items", type=int, default=500, help="line items in the SIGKILL scenario")
    parser.add_argument("--drain-items", type=int, default=2_000, help="backlog drained from a cold start")
    parser.add_argument(
        "--drain-timeout-s",
        type=float,
        default=None,
        help="give up on the drain after this long (default: a second per 20 line items)",
    )
    parser.add_argument(
        "--dbos-orders", type=int, default=100, help="orders for the DBOS comparison (each side)"
    )
    parser.add_argument(
        "--profile-s", type=float, default=15.0, help="py-spy seconds on the worker (0 = none)"
    )
    parser.add_argument(
        "--baseline-rev",
        default=None,
        help="a git revision before the perf changes: also run the assigned scenario with a worker "
        "whose whole package comes from it (an A/B of the changes in one run; same schema needed)",
    )
    parser.add_argument(
        "--skip", default="", help=f"comma-separated scenarios to leave out: {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where benchmarks.md and the plot go")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    parser.add_argument(
        "--report-only", type=Path, default=None, help="render the report from a results JSON"
    )
    parser.add_argument(
        "--drain-from",
        type=Path,
        default=None,
        help="also report the drain of another run's results JSON (e.g. a 100k backlog run on its own)",
    )
    args = parser.parse_args(argv)

    ensure_bench_dependencies()
    from bench._report import write_report  # noqa: PLC0415 - needs the bench extra
    from bench._run import Options, run_all  # noqa: PLC0415
    from bench._workload import parse_mix  # noqa: PLC0415

    command = "python -m bench" + (
        "" if argv is None and len(sys.argv) == 1 else " " + " ".join(sys.argv[1:])
    )
    if args.report_only:
        results = json.loads(args.report_only.read_text())
    else:
        skip = frozenset(s.strip() for s in args.skip.split(",") if s.strip())
        unknown = skip - set(SCENARIOS)
        if unknown:
            parser.error(f"unknown scenario(s) in --skip: {', '.join(sorted(unknown))}")
        options = Options(
            orders=args.orders,
            items=args.items,
            mix=parse_mix(args.mix),
            realistic_orders=args.realistic_orders,
            recovery_items=args.recovery_items,
            drain_items=args.drain_items,
            drain_timeout_s=args.drain_timeout_s,
            dbos_orders=args.dbos_orders,
            profile_s=args.profile_s,
            skip=skip,
            baseline_src=baseline_checkout(args.baseline_rev) if args.baseline_rev else None,
        )
        started, commit = time.time(), current_commit()
        results = asyncio.run(run_all(options, out_dir=args.out))
        results["command"] = command
        results["started"] = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started))
        results["duration_s"] = time.time() - started
        results["commit"] = commit
    if args.drain_from:
        merge_drain(results, args.drain_from)
    if not args.report_only:
        raw = args.json or Path(results["run_dir"]) / "results.json"
        raw.write_text(json.dumps(results, indent=2, default=str))
        print(f"raw results: {raw}", flush=True)
    doc = write_report(results, out_dir=args.out)
    print(f"wrote {doc}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
