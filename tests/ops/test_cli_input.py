"""Bad operator input is rejected before anything connects: a message on stderr and exit 2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["workflows", "list", "--state", "bogus"], "unknown state"),
        (["workflows", "list", "--type", "PHONE"], "unknown line item type"),
        (["workflows", "list", "--older-than", "3x"], "not a duration"),
        (["workflows", "list", "--limit", "0"], "limit"),
        (["replay", "--error-code", "provider_rejected"], "reason"),
        (["replay", "--error-code", "provider_rejected", "--reason", "  "], "reason"),
        (["replay", "not-a-uuid", "--reason", "because"], "not a workflow id"),
        (["replay", "--state", "bogus", "--reason", "because"], "unknown state"),
        (["cancel", "nope", "--reason", "because"], "not a workflow id"),
        (["retry-now", "nope", "--reason", "because"], "not a workflow id"),
    ],
)
def test_bad_input_exits_2_with_a_message(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_bad_option_type_exits_2() -> None:
    assert CliRunner().invoke(app, ["workflows", "list", "--limit", "many"]).exit_code == 2
