"""The bench's own dependencies (the `bench` extra), installed on first use."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("matplotlib", "psutil", "dbos")


def py_spy() -> str | None:
    """The py-spy binary of this interpreter's environment (pip puts it next to python)."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def ensure_bench_dependencies() -> None:
    missing = [name for name in MODULES if importlib.util.find_spec(name) is None]
    if py_spy() is None:
        missing.append("py-spy")
    if not missing:
        return
    print(f"installing the bench extra (missing: {', '.join(missing)})…", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[bench]"], check=True)
    importlib.invalidate_caches()
