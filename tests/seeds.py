"""One seed for every randomised test, from the environment, so that a red run can be replayed.

`TEST_SEED` (an integer, default `DEFAULT_SEED`) seeds every hypothesis test (as if pytest were given
`--hypothesis-seed=<TEST_SEED>`; an explicit `--hypothesis-seed` still wins) and the `seed` and `rng`
fixtures of tests/conftest.py, from which tests draw their traffic, their sandbox's fault dice and
their retry jitter. The same value gives the same examples and the same traffic on any machine;
CI (scripts/test) runs with the default. `TEST_SEED=random` draws a fresh seed, shown in the
session header. Every failing test's report carries the line that runs it again with this seed.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping

ENV_VAR = "TEST_SEED"
DEFAULT_SEED = 20261125
RANDOM = "random"


def seed_from_env(environ: Mapping[str, str] = os.environ) -> int:
    """The run's seed: `TEST_SEED` if set (an integer, or `random` for a fresh one), else the default."""
    raw = environ.get(ENV_VAR, "").strip()
    if not raw:
        return DEFAULT_SEED
    if raw == RANDOM:
        return random.SystemRandom().randrange(2**32)
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_VAR} must be an integer or {RANDOM!r}, not {raw!r}") from exc


def rerun_hint(seed: int, nodeid: str) -> str:
    """What a failing test prints: the command that replays it with the same draws."""
    return f"re-run with {ENV_VAR}={seed} pytest '{nodeid}'"
