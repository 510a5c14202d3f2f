"""The crash points' contract: what `ORCHESTRATOR_FAULT_POINT` accepts, which arrival kills, and
that every provider call the engine can plan is a declared kind (so the crash matrix covers it)."""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator import faults
from orchestrator.faults import KINDS, MARKER, STEP_KINDS, FaultSpecError, parse_spec
from orchestrator.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_a_spec_arms_pairs_and_whole_points() -> None:
    armed = parse_spec("step.before_intent_commit@submit_order:2, provider.after_call:3,relay.after_publish")
    assert armed == {
        ("step.before_intent_commit", "submit_order"): 2,
        ("provider.after_call", None): 3,
        ("relay.after_publish", None): 1,
    }
    assert parse_spec("intake.after_commit@crm.order.line_item.updated") == {
        ("intake.after_commit", "crm.order.line_item.updated"): 1
    }


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("step.nowhere:1", "unknown fault point"),
        ("step.before_intent_commit@submit:1", "never reached for 'submit'"),
        ("relay.before_publish@submit_order", "never reached for 'submit_order'"),
        ("provider.after_call:0", "positive integer"),
        ("provider.after_call@add_item:x", "positive integer"),
        ("operator.before_commit@", "unknown fault point"),
    ],
)
def test_a_spec_naming_no_known_pair_is_refused(spec: str, complaint: str) -> None:
    with pytest.raises(FaultSpecError, match=complaint):
        parse_spec(spec)


def test_settings_refuse_a_bad_spec_naming_the_variable() -> None:
    with pytest.raises(Exception, match="ORCHESTRATOR_FAULT_POINT"):
        load_settings(fault_point="step.before_intent_commit@nothing")


def _run(spec: str, calls: str) -> subprocess.CompletedProcess[str]:
    code = (
        f"from orchestrator import faults\nfaults.arm({spec!r})\n{textwrap.dedent(calls)}\nprint('survived')"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )


def test_the_armed_pair_kills_at_its_nth_arrival_and_says_where() -> None:
    done = _run(
        "step.before_intent_commit@submit_order:2",
        """
        faults.reach("step.before_intent_commit", "create_order")  # another kind: not counted
        faults.reach("step.after_intent_commit", "submit_order")  # another point
        faults.reach("step.before_intent_commit", "submit_order")  # the 1st
        print("after the first")
        faults.reach("step.before_intent_commit", "submit_order")  # the 2nd: dies
        """,
    )
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.strip() == "after the first"
    assert done.stderr.strip() == f"{MARKER} step.before_intent_commit submit_order"


def test_a_point_armed_without_a_kind_counts_every_kind() -> None:
    done = _run("provider.after_call:2", 'faults.reach("provider.after_call", "add_item")\n'
                'faults.reach("provider.after_call", "cancel_order")')  # fmt: skip
    assert done.returncode == -signal.SIGKILL
    assert done.stderr.strip() == f"{MARKER} provider.after_call cancel_order"


def test_nothing_armed_nothing_dies() -> None:
    faults.arm(None)
    for point, kinds in KINDS.items():
        for kind in kinds:
            faults.reach(point, kind)
    done = _run("", 'faults.reach("relay.before_publish", "status")')
    assert (done.returncode, done.stdout.strip()) == (0, "survived")


def _planned_steps(source: str) -> set[str]:
    """The step names `Call(...)`/`OrderCall(...)` are given in the planner: literals, or the
    literals assigned to the name passed."""
    tree = ast.parse(source)
    steps: set[str] = set()
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef):
            continue
        assigned: dict[str, set[str]] = {}
        for node in ast.walk(function):
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                literals = {c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant)}
                assigned.setdefault(node.targets[0].id, set()).update(
                    v for v in literals if isinstance(v, str)
                )
        for node in ast.walk(function):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id not in ("Call", "OrderCall") or not node.args:
                continue
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                steps.add(first.value)
            elif isinstance(first, ast.Name):
                steps |= assigned.get(first.id, set())
    return steps


def test_every_provider_call_the_engine_plans_is_a_declared_kind() -> None:
    planned = _planned_steps((ROOT / "orchestrator" / "engine" / "_plan.py").read_text())
    assert "retry_port" in planned
    assert "submit_order" in planned  # both shapes are found
    assert planned == set(STEP_KINDS), (
        "a new provider call must join faults.STEP_KINDS (and the crash matrix)"
    )
