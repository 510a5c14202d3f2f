"""docs/benchmarks.md (tables generated from one run's results) and its plot.

The prose that explains the numbers lives in `bench/notes.md`, written by hand and pasted in below
the generated tables, so that a re-run refreshes every number without losing the analysis.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

TARGET_ITEMS_PER_S = 300.0
TARGET_RECEIVED_P99_MS = 50.0
TARGET_PEER_RATIO = 2.0
TARGET_RECOVERY_S = 5.0
PLOT_NAME = "benchmarks.png"
NOTES = Path(__file__).with_name("notes.md")

# (key, label, format); a metric missing from a scenario shows as "–"
METRICS: list[tuple[str, str, str]] = [
    ("line_items", "line items", "{:.0f}"),
    ("offered_items_per_s", "offered load (items/s; – = all at once)", "{:.0f}"),
    ("items_per_s", "**activated/s, sustained** (20th–90th percentile of completions)", "{:.1f}"),
    ("overall_items_per_s", "done/s over the whole run", "{:.1f}"),
    ("received_p50_ms", "CRM event → `received`, p50 (ms)", "{:.0f}"),
    ("received_p95_ms", "CRM event → `received`, p95 (ms)", "{:.0f}"),
    ("received_p99_ms", "CRM event → `received`, p99 (ms)", "{:.0f}"),
    (
        "intake_p50_ms|intake_p99_ms",
        "… CRM event → intake starts (the event's `time`), p50 / p99 (ms)²",
        "{:.0f}",
    ),
    ("relay_p50_ms|relay_p99_ms", "… intake starts → status event read, p50 / p99 (ms)²", "{:.0f}"),
    ("done_p50_ms", "CRM event → `activated`¹, p50 (ms)", "{:.0f}"),
    ("done_p95_ms", "CRM event → `activated`¹, p95 (ms)", "{:.0f}"),
    ("done_p99_ms", "CRM event → `activated`¹, p99 (ms)", "{:.0f}"),
    ("provider_calls_per_item", "provider calls per line item", "{:.2f}"),
    ("commits_per_item", "Postgres commits per line item (xact_commit)", "{:.1f}"),
    ("write_xacts_per_item", "of which wrote (xids assigned)", "{:.1f}"),
    ("wal_kib_per_item", "WAL per line item (KiB)", "{:.1f}"),
    ("usage.worker.cpu_pct", "CPU of the worker process(es) (% of one core)", "{:.0f}"),
    ("usage.worker.rss_mib", "RSS of the worker process(es), peak (MiB)", "{:.0f}"),
    ("usage.sandbox.cpu_pct", "CPU of the sandbox process (%)", "{:.0f}"),
    ("usage.sandbox.rss_mib", "RSS of the sandbox process, peak (MiB)", "{:.0f}"),
    ("usage.postgres.cpu_pct", "CPU of Postgres, all backends (%)", "{:.0f}"),
    ("usage.kafka.cpu_pct", "CPU of the Kafka broker (%)", "{:.0f}"),
    ("usage.bench.cpu_pct", "CPU of the load generator/status reader (%)", "{:.0f}"),
    ("failed", "line items failed", "{:.0f}"),
]
SCENARIO_TITLES = {
    "zero_latency": "zero latency",
    "half_load": "half load",
    "realistic_latency": "50–200 ms latency",
    "two_workers": "2 workers",
    "ours_assigned": "ours, assigned only",
    "dbos_assigned": "DBOS peer, assigned only",
    "baseline_assigned": "ours before the perf changes, assigned only",
    "profiled": "under py-spy",
}


def _get(data: dict[str, Any], dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _fmt(value: Any, spec: str = "{:.1f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return spec.format(value)


def _ok(met: bool | None) -> str:
    return "–" if met is None else ("**met**" if met else "**missed**")


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """The headline ratios, each None when its scenario did not run."""
    sc = results.get("scenarios", {})
    out: dict[str, Any] = {}
    zero = sc.get("zero_latency", {})
    limit = results.get("pg_limit", {})
    commits = zero.get("commits_per_item")
    rate = zero.get("items_per_s")
    if limit and commits and rate:
        asyncpg_rate = limit["asyncpg"]["commits_per_s"]
        pgbench_rate = limit["pgbench"]["commits_per_s"]
        out["limit_items_per_s"] = asyncpg_rate / commits
        out["limit_items_per_s_pgbench"] = pgbench_rate / commits
        out["ours_over_limit"] = rate / out["limit_items_per_s"]
        out["ours_over_limit_pgbench"] = rate / out["limit_items_per_s_pgbench"]
        out["commits_needed_for_target"] = asyncpg_rate / TARGET_ITEMS_PER_S
    ours, peer = sc.get("ours_assigned", {}), sc.get("dbos_assigned", {})
    if ours.get("items_per_s") and peer.get("items_per_s"):
        out["ours_over_dbos"] = ours["items_per_s"] / peer["items_per_s"]
    base = sc.get("baseline_assigned", {})
    if ours.get("items_per_s") and base.get("items_per_s"):
        out["after_over_before"] = ours["items_per_s"] / base["items_per_s"]
        out["commits_before"] = base.get("commits_per_item")
        out["commits_after"] = ours.get("commits_per_item")
    one, two = sc.get("zero_latency", {}), sc.get("two_workers", {})
    if one.get("items_per_s") and two.get("items_per_s"):
        out["two_over_one"] = two["items_per_s"] / one["items_per_s"]
    return out


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    sc = results.get("scenarios", {})
    r = ratios(results)
    rows: list[tuple[str, str, str, str]] = []
    rate = _get(sc, "zero_latency.items_per_s")
    rows.append(
        (
            f"≥ {TARGET_ITEMS_PER_S:.0f} line items activated/s, zero-latency sandbox",
            f"{_fmt(rate)} /s",
            _ok(None if rate is None else rate >= TARGET_ITEMS_PER_S),
            "–"
            if rate is None
            else f"{TARGET_ITEMS_PER_S / rate:.1f}× short"
            if rate < TARGET_ITEMS_PER_S
            else "",
        )
    )
    half = sc.get("half_load", {})
    p99 = half.get("received_p99_ms")
    rows.append(
        (
            f"p99 CRM event → `received` < {TARGET_RECEIVED_P99_MS:.0f} ms at half load",
            f"{_fmt(p99, '{:.0f}')} ms at {_fmt(half.get('offered_items_per_s'), '{:.0f}')} items/s offered",
            _ok(None if p99 is None else p99 < TARGET_RECEIVED_P99_MS),
            ""
            if p99 is None or p99 < TARGET_RECEIVED_P99_MS
            else f"{p99 / TARGET_RECEIVED_P99_MS:.1f}× over",
        )
    )
    peer = r.get("ours_over_dbos")
    rows.append(
        (
            f"≥ {TARGET_PEER_RATIO:.0f}× the DBOS implementation",
            f"{_fmt(peer, '{:.2f}')}×",
            _ok(None if peer is None else peer >= TARGET_PEER_RATIO),
            "" if peer is None or peer >= TARGET_PEER_RATIO else f"{TARGET_PEER_RATIO / peer:.1f}× short",
        )
    )
    rec = sc.get("recovery_same_id", {})
    median = rec.get("resumed_p50_s")
    rows.append(
        (
            f"recovery after SIGKILL < {TARGET_RECOVERY_S:.0f} s (restart under the same worker id; "
            "judged on the median in-flight line item)",
            f"{_fmt(rec.get('recovery_s'), '{:.1f}')} s to the first state change, "
            f"{_fmt(median, '{:.1f}')} s median in-flight item, {_fmt(rec.get('all_resumed_s'), '{:.1f}')} s "
            f"the slowest of {_fmt(rec.get('in_flight_at_kill'), '{:.0f}')}",
            _ok(None if median is None else median < TARGET_RECOVERY_S),
            ""
            if median is None or median < TARGET_RECOVERY_S
            else f"{median - TARGET_RECOVERY_S:.1f} s over",
        )
    )
    return rows


def _scenario_table(results: dict[str, Any]) -> list[str]:
    sc = results.get("scenarios", {})
    names = [n for n in SCENARIO_TITLES if n in sc]
    lines = ["| metric | " + " | ".join(SCENARIO_TITLES[n] for n in names) + " |"]
    lines.append("|---|" + "---:|" * len(names))
    lines.append("| paths | " + " | ".join(str(sc[n].get("mix", "")) for n in names) + " |")
    lines.append("| workers | " + " | ".join(str(sc[n].get("workers", "")) for n in names) + " |")
    lines.append(
        "| step slots / provider connections per worker | " + " | ".join(_slots(sc[n]) for n in names) + " |"
    )
    for key, label, spec in METRICS:
        cells = [" / ".join(_fmt(_get(sc[n], k), spec) for k in key.split("|")) for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append(
        "| finished within the time limit | "
        + " | ".join("yes" if sc[n].get("finished") else f"no: {sc[n].get('stuck')}" for n in names)
        + " |"
    )
    return lines


def _profile(results: dict[str, Any]) -> list[str]:
    side = _get(results, "scenarios.profiled.side")
    if not isinstance(side, dict) or "self" not in side:
        return ["(no profile in this run)"]
    lines = [f"{side['samples']} samples at 100 Hz of the worker process (py-spy, non-blocking).", ""]
    lines += ["| by module (self time) | share |", "|---|---:|"]
    lines += [f"| `{m}` | {100 * share:.1f}% |" for m, share in side["modules"][:10]]
    lines += ["", "| function (self time) | share |", "|---|---:|"]
    lines += [f"| `{f}` | {100 * share:.1f}% |" for f, share in side["self"][:12]]
    ours = [(f, s) for f, s in side["inclusive"] if "orchestrator/" in f][:12]
    lines += ["", "| orchestrator function (inclusive) | share |", "|---|---:|"]
    lines += [f"| `{f}` | {100 * share:.1f}% |" for f, share in ours]
    return lines


def render(results: dict[str, Any], *, notes: str) -> str:
    sc = results.get("scenarios", {})
    r = ratios(results)
    m = results.get("machine", {})
    out = ["# Benchmarks", ""]
    out += [
        "Generated by `python -m bench` (issue #7) from one run on the local stack; the numbers below the",
        "line are that run's, except where the drain section names a run of its own. Re-run it to refresh",
        "them: the prose in the notes section is kept in `bench/notes.md`.",
        "",
        f"- **command**: `{results.get('command', 'python -m bench')}`",
        f"- **run**: {results.get('started', '?')}, {_fmt(results.get('duration_s'), '{:.0f}')} s"
        + (f", commit `{results['commit']}`" if results.get("commit") else ""),
        f"- **machine**: {m.get('nproc')} cores ({m.get('cpu_model')}), {m.get('memory_gib')} GiB, "
        f"Python {m.get('python')}, Linux {m.get('kernel')}; Kafka, Postgres, the sandbox, the worker(s) and "
        "the load generator all share those cores",
    ]
    for entry in results.get("load", []):
        others = "; ".join(entry.get("others") or []) or "nothing else above 5% of a core"
        out.append(f"- **load at {entry['when']}**: `{entry['uptime']}`; other processes: {others}")
    opts = results.get("options", {})
    out += [
        f"- **workload**: {opts.get('orders')} CRM orders × {opts.get('items')} subscription line items "
        f"({opts.get('mix')}); 50–200 ms scenario: {opts.get('realistic_orders')} orders; DBOS comparison: "
        f"{opts.get('dbos_orders')} orders each side, provider-assigned numbers only",
        "- **worker settings on top of the defaults**: "
        + ", ".join(f"`{k}={v}`" for k, v in results.get("worker_tuning", {}).items()),
        "",
        "## Against the targets",
        "",
        "| target | measured | | gap |",
        "|---|---|---|---|",
    ]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in targets(results)]
    out += ["", "## Ratios", ""]
    if "ours_over_limit" in r:
        lim = results["pg_limit"]
        out += [
            f"- **ours ÷ the Postgres limit**: {r['ours_over_limit']:.2f} — this Postgres commits "
            f"{lim['asyncpg']['commits_per_s']:.0f} step-shaped transactions/s from asyncpg "
            f"({lim['pgbench']['commits_per_s']:.0f}/s from pgbench); at "
            f"{sc['zero_latency']['commits_per_item']:.1f} commits per line item that allows "
            f"{r['limit_items_per_s']:.1f} line items/s "
            f"({r['limit_items_per_s_pgbench']:.1f}/s by pgbench's figure, "
            f"ratio {r['ours_over_limit_pgbench']:.2f}). "
            f"300 line items/s would need ≤ {r['commits_needed_for_target']:.1f} commits per line item.",
        ]
    if "ours_over_dbos" in r:
        out.append(
            f"- **ours ÷ DBOS Transact 3.4.0**: {r['ours_over_dbos']:.2f} "
            f"({sc['ours_assigned']['items_per_s']:.1f} vs {sc['dbos_assigned']['items_per_s']:.1f} "
            "line items/s, "
            f"{sc['ours_assigned']['commits_per_item']:.1f} vs {sc['dbos_assigned']['commits_per_item']:.1f} "
            "commits per line item)"
        )
    if "two_over_one" in r:
        out.append(f"- **2 workers ÷ 1 worker**: {r['two_over_one']:.2f}")
    if "after_over_before" in r:
        out.append(
            f"- **after ÷ before the perf changes** (assigned only): {r['after_over_before']:.2f} "
            f"({_fmt(r.get('commits_before'))} → {_fmt(r.get('commits_after'))} commits per line item)"
        )
    out += ["", f"![throughput and latency]({PLOT_NAME})", "", "## Every scenario", ""]
    out += _scenario_table(results)
    out += [
        "",
        "¹ for a scheduled activation, `activation_scheduled` (its date is days away);",
        "everything else ends `activated`.",
        "² the `received` latency in two legs, split at the `time` the worker stamps on the event when",
        "its intake starts (one host, one clock): Kafka and the worker's consumer, then the intake",
        "transaction, the outbox relay, the status topic and the reader.",
        "",
        "## Recovery after SIGKILL",
        "",
        "| | same worker id | new worker id |",
        "|---|---:|---:|",
    ]
    same, new = sc.get("recovery_same_id", {}), sc.get("recovery_new_id", {})
    for key, label in (
        ("line_items", "line items in the batch"),
        ("in_flight_at_kill", "in flight at the kill"),
        ("restart_to_first_change_s", "restart → first state change (s)"),
        ("recovery_s", "kill → first state change (s)"),
        ("resumed_p50_s", "kill → in-flight item moves again, median (s)"),
        ("all_resumed_s", "kill → **every** in-flight item moved again (s)"),
        ("all_done_after_kill_s", "kill → all line items done (s)"),
        ("failed", "line items failed"),
    ):
        out.append(f"| {label} | {_fmt(same.get(key), '{:.2f}')} | {_fmt(new.get(key), '{:.2f}')} |")
    out += ["", "## Draining a backlog", "", *_drain(results)]
    lim = results.get("pg_limit")
    out += ["", "## The Postgres limit", ""]
    if lim:
        out += [
            "| client | concurrency | step-shaped commits/s |",
            "|---|---:|---:|",
            f"| asyncpg (one Python process) | {lim['asyncpg']['concurrency']} | "
            f"{lim['asyncpg']['commits_per_s']:.0f} |",
            f"| pgbench (C, prepared statements) | {lim['pgbench']['clients']} | "
            f"{lim['pgbench']['commits_per_s']:.0f} |",
            "",
            f"Load when measured: `{lim.get('load')}`.",
        ]
    out += ["", "## Profile of the worker under load", ""]
    out += _profile(results)
    out += ["", "---", "", notes.strip(), ""]
    return "\n".join(out)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - bench extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    sc = results.get("scenarios", {})
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 5.2))
    for name in (
        "zero_latency",
        "two_workers",
        "realistic_latency",
        "ours_assigned",
        "dbos_assigned",
        "baseline_assigned",
        "drain",
    ):
        curve = sc.get(name, {}).get("curve")
        if curve:
            ax1.plot(curve, range(1, len(curve) + 1), label=SCENARIO_TITLES.get(name, name))
    ax1.set_xlabel("seconds since the first order was published")
    ax1.set_ylabel("line items done")
    ax1.set_title("Line items done over time")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)

    names = [
        n
        for n in (
            "zero_latency",
            "half_load",
            "realistic_latency",
            "two_workers",
            "ours_assigned",
            "dbos_assigned",
        )
        if n in sc
    ]
    width = 0.13
    keys = ["received_p50_ms", "received_p99_ms", "done_p50_ms", "done_p99_ms"]
    for k, key in enumerate(keys):
        values = [max(1.0, sc[n].get(key) or 1.0) for n in names]
        ax2.bar([i + k * width for i in range(len(names))], values, width, label=key.replace("_ms", ""))
    ax2.axhline(TARGET_RECEIVED_P99_MS, color="red", linestyle="--", linewidth=1, label="received p99 target")
    ax2.set_yscale("log")
    ax2.set_xticks([i + 1.5 * width for i in range(len(names))])
    ax2.set_xticklabels([SCENARIO_TITLES[n] for n in names], rotation=25, ha="right", fontsize=8)
    ax2.set_ylabel("ms (log)")
    ax2.set_title("Latency from the CRM event")
    ax2.legend(fontsize=7)

    r = ratios(results)
    bars = [(SCENARIO_TITLES[n], sc[n]["items_per_s"]) for n in names if n != "half_load"]
    if "limit_items_per_s" in r:
        bars.append(("Postgres limit at our\ncommits/line item", r["limit_items_per_s"]))
    ax3.bar([b[0] for b in bars], [b[1] for b in bars], color="tab:blue")
    ax3.axhline(TARGET_ITEMS_PER_S, color="red", linestyle="--", linewidth=1, label="target 300/s")
    ax3.set_ylabel("line items/s, sustained")
    ax3.set_title("Throughput")
    ax3.tick_params(axis="x", labelrotation=25, labelsize=8)
    for label in ax3.get_xticklabels():
        label.set_horizontalalignment("right")
    ax3.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict[str, Any], *, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    notes = NOTES.read_text() if NOTES.exists() else "(no notes yet)"
    plot(results, out_dir / PLOT_NAME)
    doc = out_dir / "benchmarks.md"
    doc.write_text(render(results, notes=notes))
    return doc


def _slots(scenario: dict[str, Any]) -> str:
    tuning = scenario.get("tuning")
    if not tuning:
        return "–"
    slots, connections = (
        tuning["ORCHESTRATOR_ENGINE__STEP_CONCURRENCY"],
        tuning["ORCHESTRATOR_CONNECT__MAX_CONCURRENCY"],
    )
    return f"{slots} / {connections}"


def _drain(results: dict[str, Any]) -> list[str]:
    """The drain(s): this run's backlog and, with `--drain-from`, a large one from a run of its own."""
    sc = results.get("scenarios", {})
    runs = [(name, sc[name]) for name in ("drain", "drain_large") if sc.get(name)]
    if not runs:
        return ["Not run (`--skip drain`)."]
    out = [
        "| | " + " | ".join(f"{d['line_items']:,} line items" for _, d in runs) + " |",
        "|---|" + "---:|" * len(runs),
    ]
    for label, value in (
        ("backlog published before the worker started (line items)", lambda d: f"{d['line_items']:,}"),
        ("done", lambda d: f"{d['done']:,}" if "done" in d else "–"),
        ("finished within the time limit", lambda d: "yes" if d.get("finished", True) else "**no**"),
        ("**all done after the worker process was started**", lambda d: _minutes(d["drain_s"])),
        ("all `received` after start", lambda d: _minutes(d["intake_s"])),
        ("sustained rate (line items/s)", lambda d: _fmt(d["items_per_s"])),
        ("whole backlog ÷ drain time (line items/s)", lambda d: _fmt(d["line_items"] / d["drain_s"])),
        ("commits per line item", lambda d: _fmt(d["commits_per_item"])),
        (
            "worker / sandbox / Postgres CPU (%)",
            lambda d: " / ".join(
                _fmt(_get(d, f"usage.{role}.cpu_pct"), "{:.0f}") for role in ("worker", "sandbox", "postgres")
            ),
        ),
        ("worker RSS, peak (MiB)", lambda d: _fmt(_get(d, "usage.worker.rss_mib"), "{:.0f}")),
    ):
        out.append(f"| {label} | " + " | ".join(value(d) for _, d in runs) + " |")
    source = results.get("drain_source")
    large = sc.get("drain_large")
    if source and large:
        out += [
            "",
            f"The {large['line_items']:,}-item drain is from a run of its own (`{source['command']}`, "
            f"{source['started']}, commit `{source.get('commit', '?')}`; load at its end "
            f"`{source['load']}`).",
        ]
    big = max(runs, key=lambda run: run[1]["line_items"])[1]
    progress = big.get("tenths") or tenths(big.get("curve") or [])
    if big["line_items"] >= 10_000 and progress:
        out += [
            "",
            f"How the {big['line_items']:,}-item drain progressed (from its completion times):",
            "",
            "| done | after (min) | line items/s in this tenth |",
            "|---:|---:|---:|",
        ]
        previous = (0, 0.0)
        for count, at_s in progress:
            rate = (count - previous[0]) / (at_s - previous[1]) if at_s > previous[1] else math.nan
            out.append(f"| {count:,} | {at_s / 60:.1f} | {_fmt(rate)} |")
            previous = (count, at_s)
    return out


def tenths(curve: list[float]) -> list[tuple[int, float]]:
    """(line items done, seconds after the start) at each tenth of a sorted completion curve."""
    if len(curve) < 10:
        return []
    return [(len(curve) * tenth // 10, curve[len(curve) * tenth // 10 - 1]) for tenth in range(1, 11)]


def _minutes(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
