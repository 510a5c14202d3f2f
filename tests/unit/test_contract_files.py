"""The checked-in contract files (JSON Schemas, AsyncAPI, state machine docs) match the code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.events import DlqReason
from orchestrator.events import schemas as schema_files
from orchestrator.machines import diagrams
from orchestrator.settings import KafkaSettings

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"


def test_json_schema_files_match_the_models() -> None:
    assert schema_files.stale_files(SCHEMAS) == [], "run: python -m orchestrator.events.schemas --write"
    assert schema_files.main(["--check"]) == 0


def test_schema_check_fails_on_a_drifted_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schema_files.write_all(tmp_path)
    (tmp_path / "crm.order.cancelled.json").write_text("{}\n", encoding="utf-8")

    assert schema_files.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "crm.order.cancelled.json" in capsys.readouterr().err


def test_state_machine_doc_matches_the_machines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "state-machines.md"
    stale.write_text("# old\n", encoding="utf-8")

    assert diagrams.main(["--check"]) == 0
    assert diagrams.main(["--check", "--path", str(stale)]) == 1
    assert "is stale" in capsys.readouterr().err
    text = (ROOT / "docs" / "state-machines.md").read_text(encoding="utf-8")
    assert text.count("```mermaid") == 3
    assert "temp_number_active" in text


def _asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((SCHEMAS / "asyncapi.json").read_text(encoding="utf-8"))
    return document


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def _resolve(document: dict[str, Any], pointer: str) -> Any:
    node: Any = document
    for part in pointer.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_asyncapi_document_parses_and_every_reference_resolves() -> None:
    document = _asyncapi()
    refs = _refs(document)
    files = {ref.removeprefix("./") for ref in refs if ref.startswith("./")}

    assert document["asyncapi"] == "3.0.0"
    for ref in refs:
        if ref.startswith("#/"):
            assert _resolve(document, ref) is not None
    assert files == set(schema_files.SCHEMA_FILES)
    for name in files:
        assert json.loads((SCHEMAS / name).read_text(encoding="utf-8"))["$id"] == name


def test_asyncapi_describes_every_topic_with_its_default_name() -> None:
    defaults = KafkaSettings()
    addresses = {channel["address"] for channel in _asyncapi()["channels"].values()}

    assert addresses == {
        defaults.orders_topic,
        defaults.orders_dlq_topic,
        defaults.connect_events_topic,
        defaults.status_topic,
    }


def test_asyncapi_dlq_reasons_are_the_decoder_reasons() -> None:
    headers = _asyncapi()["components"]["schemas"]["DeadLetterHeaders"]

    assert headers["properties"]["dlq_reason"]["enum"] == [reason.value for reason in DlqReason]
    assert {"dlq_source_topic", "dlq_source_partition", "dlq_source_offset"} <= set(headers["required"])
