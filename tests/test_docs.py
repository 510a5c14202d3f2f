"""The docs say what the code does: generated sections must match their source."""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator.settings import settings_table

ROOT = Path(__file__).resolve().parents[1]


def test_readme_configuration_table_matches_settings() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- settings-table:start.*?-->\n(.*?)\n<!-- settings-table:end -->", readme, re.S)
    assert match, "README.md lost its settings-table markers"
    assert match.group(1) == settings_table(), "README configuration table is stale: regenerate it"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test" in readme.split("\n## ")[0], "the README's first screen must name the test command"
    assert re.search(r"^exec scripts/test$", ci, re.M)
