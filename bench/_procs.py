"""The processes under test: the sandbox (`orchestrator sandbox`), workers (`orchestrator run`), the
DBOS peer, and a sampler of their CPU and memory."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from pydantic import BaseModel, SecretStr

from orchestrator.localstack import spawn, stop_process
from orchestrator.settings import Settings, env_name, settings_env


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


async def wait_until(
    predicate: Any, *, timeout_s: float, what: str, proc: subprocess.Popen[bytes] | None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{what} not ready within {timeout_s:.0f} s")


@dataclass
class Sandbox:
    proc: subprocess.Popen[bytes]
    base_url: str
    api_key: str

    async def control(self, method: str, path: str, **kwargs: Any) -> Any:
        async with httpx.AsyncClient(base_url=self.base_url, headers={"X-API-Key": self.api_key}) as http:
            answer = await http.request(method, path, **kwargs)
            answer.raise_for_status()
            return answer.json() if answer.content else None

    async def requests(self) -> int:
        return int((await self.control("GET", "/_sandbox/stats"))["requests"])

    async def calls_by_endpoint(self) -> dict[str, int]:
        """Requests in the sandbox's ledger by method and path shape (ids replaced by `{id}`)."""
        answer = await self.control("GET", "/_sandbox/ledger?kind=request")
        counts: dict[str, int] = {}
        for entry in answer["entries"]:
            shape = "/".join(
                "{id}" if any(c.isdigit() for c in part) else part for part in entry["path"].split("/")
            )
            key = f"{entry['method']} {shape}"
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))

    async def stop(self) -> None:
        await stop_process(self.proc, grace_s=10)


async def start_sandbox(
    *,
    port: int,
    api_key: str,
    webhook_url: str | None,
    webhook_secret: str | None,
    order_step_s: float,
    port_step_s: float,
    port_delay_s: float,
    log: Path,
) -> Sandbox:
    argv = [
        sys.executable,
        "-m",
        "orchestrator",
        "sandbox",
        "--port",
        str(port),
        "--seed",
        "1",
        "--order-step-s",
        str(order_step_s),
        "--port-step-s",
        str(port_step_s),
        "--port-delay-s",
        str(port_delay_s),
        "--log-level",
        "warning",
    ]
    if webhook_url:
        argv += ["--webhook-url", webhook_url]
    env = {**os.environ, "SANDBOX_API_KEY": api_key}
    if webhook_secret:
        env["SANDBOX_WEBHOOK_SECRET"] = webhook_secret
    proc = spawn(argv, log_path=log, parent_death_signal=signal.SIGTERM, env=env)
    sandbox = Sandbox(proc=proc, base_url=f"http://127.0.0.1:{port}", api_key=api_key)

    async def healthy() -> bool:
        try:
            await sandbox.control("GET", "/_sandbox/health")
        except httpx.HTTPError:
            return False
        return True

    await wait_until(healthy, timeout_s=30, what="sandbox", proc=proc)
    return sandbox


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    worker_id: str
    started_at: float  # time.time() at spawn

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    async def stop(self) -> None:
        await stop_process(self.proc, grace_s=30)


def explicit_env(settings: Settings) -> dict[str, str]:
    """The ORCHESTRATOR_* variables of the settings the bench set, and no defaults: a worker from
    another revision (`src`) keeps its own defaults and is not handed a field it does not know
    (its settings forbid extra fields)."""

    def walk(model: BaseModel, prefix: tuple[str, ...]) -> dict[str, str]:
        env: dict[str, str] = {}
        for name in sorted(model.model_fields_set):
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                env.update(walk(value, (*prefix, name)))
            elif isinstance(value, SecretStr):
                env[env_name((*prefix, name))] = value.get_secret_value()
            elif value is not None:
                env[env_name((*prefix, name))] = str(value).lower() if isinstance(value, bool) else str(value)
        return env

    return walk(settings, ())


def spawn_worker(
    settings: Settings, *, worker_id: str, log: Path, extra_env: dict[str, str], src: Path | None = None
) -> WorkerProcess:
    """`orchestrator run` in its own process; with `src`, the package from that checkout instead."""
    env = {
        **os.environ,
        **(explicit_env(settings) if src is not None else settings_env(settings)),
        "ORCHESTRATOR_LOG_LEVEL": "WARNING",
        **extra_env,
    }
    if src is not None:
        env["PYTHONPATH"] = str(src)
    argv = [sys.executable, "-m", "orchestrator", "run", "--no-migrate", "--worker-id", worker_id]
    started = time.time()
    proc = spawn(argv, log_path=log, parent_death_signal=signal.SIGTERM, env=env, cwd=src)
    return WorkerProcess(proc=proc, worker_id=worker_id, started_at=started)


def checkout_package(src: Path) -> str:
    """Where `python -m orchestrator` imports the package from with `src` first on the path."""
    return subprocess.run(
        [sys.executable, "-c", "import orchestrator; print(orchestrator.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=src,
        env={**os.environ, "PYTHONPATH": str(src)},
    ).stdout.strip()


async def migrate_checkout(src: Path, url: str) -> None:
    """Migrate `url` with the checkout's own `orchestrator migrate` and `migrations/` directory."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")},
        "PYTHONPATH": str(src),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        "migrate",
        "--database-url",
        url,
        cwd=src,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"migrating with {src} failed ({proc.returncode}): {out.decode()[-1500:]}")


@dataclass
class _Series:
    samples: list[tuple[float, float, int]] = field(default_factory=list)  # (time, cpu seconds, rss)


HOST = "host"  # the whole machine's busy CPU (every process, ours or not), from /proc/stat


def host_busy_s() -> float:
    """CPU seconds the machine spent busy since boot, all cores (not idle, not waiting for I/O)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


class Sampler:
    """Samples CPU seconds and RSS of named process trees every `interval_s` in a thread, and on
    demand (`mark`) at the edges of a measured window, so that a short window loses nothing.

    A role's tree is the root process and all its descendants (Postgres is a postmaster with one
    backend per connection). The root's `children_*` times hold the CPU of descendants it has
    already reaped, so a Postgres backend that ended in between (an autovacuum worker, a closed
    connection) still counts. The pseudo-role `host` is the whole machine's busy time.
    """

    def __init__(self, interval_s: float = 0.5) -> None:
        self._interval_s = interval_s
        self._roots: dict[str, list[int]] = {}
        self._whole_tree: dict[str, bool] = {}
        self._series: dict[str, _Series] = {HOST: _Series()}
        self._procs: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._sampling = threading.Lock()

    def watch(self, role: str, pid: int, *, tree: bool = True) -> None:
        with self._lock:
            self._roots.setdefault(role, []).append(pid)
            self._whole_tree[role] = tree
            self._series.setdefault(role, _Series())

    def unwatch(self, role: str) -> None:
        with self._lock:
            self._roots.pop(role, None)

    def _proc(self, pid: int) -> psutil.Process:
        proc = self._procs.get(pid)
        if proc is None:
            proc = self._procs[pid] = psutil.Process(pid)
        return proc

    def _tree(self, pid: int, tree: bool) -> Iterator[psutil.Process]:
        try:
            root = self._proc(pid)
            yield root
            if not tree:
                return
            for child in root.children(recursive=True):
                yield self._proc(child.pid)
        except psutil.Error:
            return

    def sample(self) -> None:
        with self._sampling:
            now = time.time()
            with self._lock:
                roots = {role: list(pids) for role, pids in self._roots.items()}
                whole = dict(self._whole_tree)
            for role, pids in roots.items():
                cpu, rss = 0.0, 0
                for pid in pids:
                    for proc in self._tree(pid, whole.get(role, True)):
                        with contextlib.suppress(psutil.Error):
                            times = proc.cpu_times()
                            cpu += times.user + times.system
                            if proc.pid == pid and whole.get(role, True):  # reaped descendants
                                cpu += times.children_user + times.children_system
                            rss += proc.memory_info().rss
                self._series[role].samples.append((now, cpu, rss))
            self._series[HOST].samples.append((now, host_busy_s(), 0))

    def mark(self) -> float:
        """Sample now (the edge of a measured window); returns the time of the sample."""
        self.sample()
        return self._series[HOST].samples[-1][0]

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.sample()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _window(self, role: str, start: float, end: float) -> list[tuple[float, float, int]]:
        return sorted(s for s in self._series.get(role, _Series()).samples if start <= s[0] <= end)

    def usage(self, role: str, start: float, end: float) -> dict[str, float]:
        """CPU seconds, average CPU (% of one core) and peak RSS (MiB) of `role` between two wall times."""
        samples = self._window(role, start, end)
        if len(samples) < 2:
            return {"cpu_s": float("nan"), "cpu_pct": float("nan"), "rss_mib": float("nan")}
        # CPU seconds are cumulative per process; a restarted process resets, so sum positive steps
        used = sum(max(0.0, b[1] - a[1]) for a, b in itertools.pairwise(samples))
        span = samples[-1][0] - samples[0][0]
        return {
            "cpu_s": used,
            "cpu_pct": 100.0 * used / span if span > 0 else float("nan"),
            "rss_mib": max(s[2] for s in samples) / 2**20,
        }

    def rss(self, role: str, start: float, end: float) -> list[tuple[float, float]]:
        """(seconds after `start`, RSS MiB) of every sample of `role` in the window."""
        return [(t - start, rss / 2**20) for t, _, rss in self._window(role, start, end)]
