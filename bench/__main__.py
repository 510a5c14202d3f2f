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

SCENARIOS = (
    "limit",
    "zero",
    "assigned",
    "half",
    "realistic",
    "scale",
    "dbos",
    "recovery",
    "drain",
    "profile",
)


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


def resolve(rev: str) -> str:
    """`rev`'s short hash (a branch or tag names a commit that may move)."""
    return subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", f"{rev}^{{commit}}"],
        capture_output=True,
        check=True,
        text=True,
    ).stdout.strip()


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


CURVES = ("curve", "side", "worker_rss_curve")


def strip_curves(value: Any) -> Any:
    """A results tree without its per-line-item completion curves (kept small beside another run)."""
    if isinstance(value, dict):
        return {k: strip_curves(v) for k, v in value.items() if k not in CURVES}
    if isinstance(value, list):
        return [strip_curves(v) for v in value]
    return value


def merge_before(results: dict[str, Any], path: Path) -> None:
    """Keep another run's results (the code before a change) beside this one's, curves left out."""
    other = json.loads(path.read_text())
    other.pop("before", None)
    results["before"] = {**strip_curves(other), "source": str(path)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--orders", type=int, default=300, help="orders per load scenario, published at once (default 300)"
    )
    parser.add_argument("--items", type=int, default=2, help="subscription line items per order (default 2)")
    parser.add_argument(
        "--mix",
        default="assigned=40,leased=20,port=15,port_temp=15,scheduled=10",
        help="paths and their weights for the mixed scenarios (assigned, leased, port, port_temp, scheduled)",
    )
    parser.add_argument(
        "--half-items",
        type=int,
        default=2_000,
        help="line items offered at half the measured capacity (the p99 is taken over them; default 2000)",
    )
    parser.add_argument(
        "--realistic-orders", type=int, default=150, help="orders with 50–200 ms provider latency"
    )
    parser.add_argument("--recovery-items", type=int, default=500, help="line items in the SIGKILL scenario")
    parser.add_argument("--drain-items", type=int, default=2_000, help="backlog drained from a cold start")
    parser.add_argument(
        "--drain-timeout-s",
        type=float,
        default=None,
        help="give up on the drain after this long (default: a second per 10 line items, at least 300 s)",
    )
    parser.add_argument(
        "--dbos-orders", type=int, default=300, help="orders per run of the DBOS comparison (each side)"
    )
    parser.add_argument(
        "--dbos-runs", type=int, default=3, help="runs of each side of the DBOS comparison, alternated"
    )
    parser.add_argument(
        "--peer-order-read-per-item",
        choices=("auto", "on", "off"),
        default="auto",
        help="the DBOS peer reads the provider order once more per line item; auto (the default): if "
        "our first run of the comparison read it about once per line item, so that both make the same calls",
    )
    parser.add_argument(
        "--profile-s", type=float, default=15.0, help="py-spy seconds on the worker (0 = none)"
    )
    parser.add_argument(
        "--worker-rev",
        default=None,
        help="run every scenario with workers whose package, and databases whose migrations, come from "
        "this git revision (e.g. the code before a change, for a 'before' JSON)",
    )
    parser.add_argument(
        "--baseline-rev",
        default=None,
        help="also run the assigned scenario with a worker (package and migrations) from this revision, "
        "in the same run (an A/B of one scenario)",
    )
    parser.add_argument(
        "--before-json",
        type=Path,
        default=None,
        help="another run's results JSON (e.g. bench/results/before-62e54bb.json): its headline figures "
        "are shown beside this run's",
    )
    parser.add_argument(
        "--no-statements",
        action="store_true",
        help="leave pg_stat_statements off (statements per line item are then not counted)",
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
    return parser


def run(args: argparse.Namespace, parser: argparse.ArgumentParser, command: str) -> dict[str, Any]:
    """Every scenario not skipped, on a local stack of its own; the raw results."""
    from bench._procs import checkout_package  # noqa: PLC0415 - imports the orchestrator package
    from bench._run import Options, run_all  # noqa: PLC0415
    from bench._workload import parse_mix  # noqa: PLC0415

    skip = frozenset(s.strip() for s in args.skip.split(",") if s.strip())
    unknown = skip - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) in --skip: {', '.join(sorted(unknown))}")
    worker_src = baseline_checkout(args.worker_rev) if args.worker_rev else None
    worker_commit = resolve(args.worker_rev) if args.worker_rev else current_commit()
    options = Options(
        orders=args.orders,
        items=args.items,
        mix=parse_mix(args.mix),
        half_items=args.half_items,
        realistic_orders=args.realistic_orders,
        recovery_items=args.recovery_items,
        drain_items=args.drain_items,
        drain_timeout_s=args.drain_timeout_s,
        dbos_orders=args.dbos_orders,
        dbos_runs=args.dbos_runs,
        peer_order_read_per_item={"auto": None, "on": True, "off": False}[args.peer_order_read_per_item],
        profile_s=args.profile_s,
        skip=skip,
        worker_src=worker_src,
        worker_commit=worker_commit,
        baseline_src=baseline_checkout(args.baseline_rev) if args.baseline_rev else None,
        baseline_commit=resolve(args.baseline_rev) if args.baseline_rev else None,
        statements=not args.no_statements,
    )
    if worker_src is not None:
        print(f"worker code from {args.worker_rev} ({worker_commit}): {checkout_package(worker_src)}")
    started = time.time()
    results = asyncio.run(run_all(options, out_dir=args.out))
    results["command"] = command
    results["started"] = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started))
    results["duration_s"] = time.time() - started
    # the commit every figure of ours measured; the bench's own code may be newer
    results["commit"] = worker_commit
    results["bench_commit"] = current_commit()
    results["worker_rev"] = args.worker_rev
    return results


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    ensure_bench_dependencies()
    from bench._report import write_report  # noqa: PLC0415 - needs the bench extra

    command = "python -m bench" + (
        "" if argv is None and len(sys.argv) == 1 else " " + " ".join(sys.argv[1:])
    )
    results = json.loads(args.report_only.read_text()) if args.report_only else run(args, parser, command)
    if args.drain_from:
        merge_drain(results, args.drain_from)
    if args.before_json:
        merge_before(results, args.before_json)
    if not args.report_only:
        raw = args.json or Path(results["run_dir"]) / "results.json"
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_text(json.dumps(results, indent=2, default=str))
        print(f"raw results: {raw}", flush=True)
    doc = write_report(results, out_dir=args.out)
    print(f"wrote {doc}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
