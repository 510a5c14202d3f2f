"""The soak: N orders under continuous random faults for a set time, then the invariant checker.

    python -m tests.soak --minutes 10 --orders 600 --seed 1 [--workers 2] [--infra]

It starts a LocalStack of its own (Kafka, PostgreSQL), a sandbox in this process and `--workers`
`orchestrator run` processes. While orders are published at an even rate, a chaos loop keeps
changing the provider's faults (errors, 429 with Retry-After, latency, lost responses, dropped
connections), SIGKILLs workers, restarts them (half of the time armed at a random fault point, so
they die again at an exact step), and with `--infra` stops and restarts the broker and the
database. At the end the faults stop, the run drains, and the checker reads everything back. The
summary table is printed (and written to `--out` as JSON); the exit code is 1 on any violation.

Not part of the default suite: it runs for minutes by design.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError

from orchestrator.localstack import LocalStack, free_port, local_stack
from orchestrator.logs import configure_logging
from orchestrator.store import migrate
from tests.reliability.harness import WORKER_POINTS, Message, Rig, WorkerProcess, drain, order_messages, rig
from tests.reliability.invariants import Report


@dataclass
class Tally:
    """What the chaos did, for the summary."""

    orders: int = 0
    messages: int = 0
    provider_faults: Counter[str] = field(default_factory=Counter)  # rule kind -> times switched on
    kills: int = 0
    fault_point_deaths: Counter[str] = field(default_factory=Counter)
    restarts: int = 0
    broker_restarts: int = 0
    database_restarts: int = 0
    publish_retries: int = 0


def _random_rules(rng: random.Random) -> list[dict[str, Any]]:
    """One or two provider fault rules; total failure odds per call stay well under retry limits."""
    menu: list[dict[str, Any]] = [
        {"kind": "error", "status": rng.choice([500, 502, 503]), "probability": rng.uniform(0.05, 0.25)},
        {"kind": "rate_limit", "retryAfterS": rng.choice([1, 2]), "probability": rng.uniform(0.05, 0.2)},
        {"kind": "latency", "latencyMs": rng.choice([200, 800, 1500]), "probability": rng.uniform(0.1, 0.4)},
        {"kind": "latency", "latencyMs": 5000, "probability": 0.03},  # longer than the client's timeout
        {"kind": "lost_response", "status": rng.choice([0, 502]), "probability": rng.uniform(0.05, 0.2)},
        {"kind": "drop", "probability": rng.uniform(0.02, 0.1)},
        {"kind": "error", "status": 503, "probability": 1.0, "times": rng.randint(5, 40)},  # an outage
    ]
    return rng.sample(menu, rng.randint(1, 2))


class Soak:
    def __init__(self, *, stack: LocalStack, rig: Rig, args: argparse.Namespace, rng: random.Random) -> None:
        self.stack = stack
        self.rig = rig
        self.args = args
        self.rng = rng
        self.tally = Tally()
        # Slot 0 serves the webhook ingress the sandbox delivers to; the others bind spare ports.
        self.ports = [rig.settings.webhook.port] + [free_port() for _ in range(args.workers - 1)]
        self.slots: list[WorkerProcess | None] = [None] * args.workers
        self.calm = False  # once faults stop, restarted workers are no longer armed

    def start_slot(self, slot: int, *, armed: bool) -> None:
        point = f"{self.rng.choice(WORKER_POINTS)}:{self.rng.randint(1, 8)}" if armed else None
        self.slots[slot] = self.rig.worker(fault_point=point, webhook_port=self.ports[slot])

    def supervise(self) -> None:
        """Restart dead workers, noting which fault point killed them."""
        for slot, worker in enumerate(self.slots):
            if worker is not None and not worker.alive:
                fired = worker.fired()
                if fired:
                    self.tally.fault_point_deaths[fired] += 1
                self.tally.restarts += 1
                self.start_slot(slot, armed=not self.calm and self.rng.random() < 0.5)

    async def publisher(self, deadline: float) -> None:
        total, sent = self.args.orders, 0
        pending: list[Message] | None = None  # generated once, re-sent as they are until the broker acks
        count = 0
        started = time.monotonic()
        while sent < total and time.monotonic() < deadline:
            due = min(total, int(total * (time.monotonic() - started) / (deadline - started)) + 1)
            if due > sent:
                if pending is None:
                    count = due - sent
                    pending = order_messages(self.rng, count, prefix=f"soak{sent}", catalog=self.rig.catalog)
                messages = pending
                try:
                    await self.rig.publish(messages)
                except KafkaError:  # the broker is being restarted: the CRM retries, and so do we
                    self.tally.publish_retries += 1
                    await asyncio.sleep(1.0)
                    continue  # the same orders again: whatever went out already is deduplicated
                self.tally.orders += count
                self.tally.messages += len(messages)
                sent, pending = sent + count, None
            await asyncio.sleep(1.0)

    async def chaos(self, deadline: float) -> None:
        next_infra = time.monotonic() + 60
        while time.monotonic() < deadline:
            await asyncio.sleep(self.rng.uniform(2, 6))
            self.supervise()
            roll = self.rng.random()
            if roll < 0.45:
                rules = _random_rules(self.rng) if self.rng.random() < 0.8 else []
                await self.rig.control.faults(*rules)
                self.tally.provider_faults.update(r["kind"] for r in rules)
            elif roll < 0.75:
                slot = self.rng.randrange(len(self.slots))
                worker = self.slots[slot]
                if worker is not None and worker.alive:
                    worker.kill()
                    self.tally.kills += 1
                    await asyncio.sleep(self.rng.uniform(0, 3))
                    self.tally.restarts += 1
                    self.start_slot(slot, armed=self.rng.random() < 0.5)
            if self.args.infra and time.monotonic() > next_infra and time.monotonic() < deadline - 30:
                await self.restart_infra()
                next_infra = time.monotonic() + self.rng.uniform(60, 120)

    async def restart_infra(self) -> None:
        if self.rng.random() < 0.5 or self.stack.postgres is None:
            await self.stack.kafka.stop()
            await asyncio.sleep(self.rng.uniform(2, 8))
            await self.stack.kafka.start()
            self.tally.broker_restarts += 1
        else:
            await self.stack.postgres.stop()
            await asyncio.sleep(self.rng.uniform(2, 8))
            await self.stack.postgres.start()
            self.tally.database_restarts += 1

    async def run(self) -> Report:
        for slot in range(len(self.slots)):
            self.start_slot(slot, armed=False)
        deadline = time.monotonic() + self.args.minutes * 60
        await asyncio.gather(self.publisher(deadline), self.chaos(deadline))
        await self.rig.control.faults()  # faults off: now everything must settle
        self.calm = True
        self.supervise()
        await drain(self.rig, timeout_s=600, on_tick=self.supervise)
        self.tally.restarts += self.rig.restarts
        return await self.rig.report()


def summary(args: argparse.Namespace, tally: Tally, report: Report, elapsed_s: float) -> str:
    faults = ", ".join(f"{k} ×{v}" for k, v in sorted(tally.provider_faults.items())) or "none"
    deaths = ", ".join(f"{k} ×{v}" for k, v in sorted(tally.fault_point_deaths.items())) or "none"
    states = ", ".join(f"{k} {v}" for k, v in sorted(report.states.items()))
    failures = ", ".join(f"{k} {v}" for k, v in sorted(report.failures.items())) or "none"
    rows = [
        (
            "command",
            f"python -m tests.soak --minutes {args.minutes} --orders {args.orders} --seed {args.seed} "
            f"--workers {args.workers}{' --infra' if args.infra else ''}",
        ),
        ("wall time", f"{elapsed_s / 60:.1f} min (faults for {args.minutes} min, then drain and check)"),
        (
            "orders published",
            f"{tally.orders} ({tally.messages} CRM records incl. duplicates, amendments, "
            "cancellations and poison)",
        ),
        ("line items", f"{report.facts.get('line_items', 0)}: {states}"),
        ("failed line items (codes)", failures),
        ("provider fault rules switched on", faults),
        ("worker SIGKILLs from outside", str(tally.kills)),
        ("deaths at a fault point", deaths),
        ("worker restarts", str(tally.restarts)),
        ("broker restarts", str(tally.broker_restarts)),
        ("database restarts", str(tally.database_restarts)),
        ("CRM publishes retried (broker away)", str(tally.publish_retries)),
        ("provider effects in the ledger", str(report.facts.get("provider_effects", 0))),
        (
            "status records (duplicates deduped by id)",
            f"{report.facts.get('status_records', 0)} "
            f"({report.facts.get('status_duplicates', 0)} duplicates)",
        ),
        ("DLQ records", str(report.facts.get("dlq_records", 0))),
        ("invariants", "all hold" if report.ok else f"{len(report.violations)} VIOLATIONS"),
    ]
    lines = ["| what | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], "", report.table()]
    if not report.ok:
        lines += ["", report.explain()]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    configure_logging(level="WARNING", json=False)  # the in-process sandbox is chatty at INFO
    rng = random.Random(args.seed)
    run_dir = Path(tempfile.mkdtemp(prefix="orchestrator-soak-"))
    started = time.monotonic()
    try:
        async with local_stack(run_dir=run_dir / "stack") as stack:
            await migrate(stack.database_url)
            async with rig(
                kafka=stack.kafka,
                database_url=stack.database_url,
                log_dir=run_dir / "logs",
                seed=args.seed,
                leases=args.orders // 10 + 10,  # `leased` is one kind in 15: enough for every draw
            ) as running:
                soak = Soak(stack=stack, rig=running, args=args, rng=rng)
                report = await soak.run()
                await running.stop_all()
        text = summary(args, soak.tally, report, time.monotonic() - started)
        print(text)
        if args.out:
            Path(args.out).write_text(
                json.dumps(
                    {
                        "summary": text,
                        "ok": report.ok,
                        "facts": report.facts,
                        "violations": [str(v) for v in report.violations],
                    },
                    indent=2,
                )
            )
        return 0 if report.ok else 1
    finally:
        if args.keep:
            print(f"run directory kept: {run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long faults are injected")
    parser.add_argument("--orders", type=int, default=600, help="orders published over that time")
    parser.add_argument("--seed", type=int, default=1, help="drives traffic, faults and kills")
    parser.add_argument("--workers", type=int, default=2, help="orchestrator run processes")
    parser.add_argument("--infra", action="store_true", help="also restart the broker and the database")
    parser.add_argument("--out", help="write the summary and violations as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs) afterwards")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
