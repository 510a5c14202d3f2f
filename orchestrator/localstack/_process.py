"""Child processes of the local stack: started with their output in a log file, stopped politely.

Children stay in our session (so `ps -s` sees them and tooling can check that nothing is left
behind) but get their own process group, so a Ctrl-C in the terminal reaches only the
orchestrator, which then stops them in order. They also receive a signal if we die without
stopping them (Linux parent-death signal), so a crashed test run leaves no broker holding a port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from orchestrator.errors import LocalStackError
from orchestrator.lifecycle import AsyncLifecycle, RunState

_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int) -> None:
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    parent_death_signal: int,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` with stdout and stderr appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            user=user,
            process_group=0,
            # runs after the uid switch, which would otherwise clear the parent-death signal
            preexec_fn=lambda: _die_with_parent(parent_death_signal),  # noqa: PLW1509 - only prctl, then exec
        )


async def stop_process(
    proc: subprocess.Popen[bytes], *, polite: int = signal.SIGTERM, grace_s: float = 30.0
) -> int:
    """Send `polite`, wait up to `grace_s`, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(polite)
        if await wait_exit(proc, timeout_s=grace_s) is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await wait_exit(proc, timeout_s=10.0)
    code = proc.poll()
    return -1 if code is None else code


async def wait_exit(proc: subprocess.Popen[bytes], *, timeout_s: float) -> int | None:
    """Poll for exit without blocking the event loop (Popen has no async wait)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (code := proc.poll()) is None and loop.time() < deadline:  # noqa: ASYNC110 - nothing to await on
        await asyncio.sleep(0.05)
    return code


def tail(path: Path, *, lines: int = 30) -> str:
    """The end of a log file, for error messages; empty if there is none yet."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def process_user() -> str | None:
    """The unprivileged user to run servers as when we are root (Postgres refuses root)."""
    return "embedded_postgres" if os.geteuid() == 0 else None


async def wait_ready(
    proc: subprocess.Popen[bytes],
    probe: Callable[[], Awaitable[None]],
    *,
    name: str,
    timeout_s: float,
    interval_s: float,
    retry_on: tuple[type[BaseException], ...],
    logs: Callable[[], str],
) -> None:
    """Run `probe` until it succeeds. A process that exits, or a probe that keeps failing past
    `timeout_s`, is a LocalStackError carrying the end of the server's logs."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last_error: BaseException | None = None
    while loop.time() < deadline:
        if proc.poll() is not None:
            raise LocalStackError(f"{name} exited with code {proc.returncode} during start-up; {logs()}")
        try:
            await probe()
        except retry_on as exc:
            last_error = exc
            await asyncio.sleep(interval_s)
        else:
            return
    raise LocalStackError(
        f"{name} did not become ready within {timeout_s:.0f} s (last error: {last_error!r}); {logs()}"
    )


class LocalProcess(AsyncLifecycle):
    """What LocalKafka and LocalPostgres share: one child process, its state, and how it ends."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._state = RunState.NEW

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @abstractmethod
    async def _wait_ready(self) -> None:
        """Return once the child serves; raise if it does not."""

    async def _launch(
        self, argv: Sequence[str], *, log_path: Path, parent_death_signal: int, user: str | None = None
    ) -> None:
        """Spawn the child and wait until it serves; stop it again if it does not."""
        self._proc = spawn(argv, log_path=log_path, parent_death_signal=parent_death_signal, user=user)
        self._state = RunState.RUNNING
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise

    async def _end(self, *, polite: signal.Signals, grace_s: float) -> None:
        """`polite`, then SIGKILL after `grace_s`; nothing to do once the process is gone."""
        if self._proc is not None:
            await stop_process(self._proc, polite=polite, grace_s=grace_s)
            self._proc = None
        self._state = RunState.STOPPED
