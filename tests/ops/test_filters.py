"""An operator's filter in the store's terms: durations become instants before "now", "stuck"
leaves out the terminal states but not `failed` (it waits for an operator), and every condition
is ANDed with its own numbered parameter."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from orchestrator.machines import TERMINAL_STATES
from orchestrator.ops import build_filter
from orchestrator.store.read_models import WorkflowQuery, where_sql

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_durations_become_instants_before_now() -> None:
    query = build_filter(older_than="2h", newer_than="3d").query(now=NOW)
    assert query.created_before == NOW - timedelta(hours=2)
    assert query.created_after == NOW - timedelta(days=3)
    assert query.updated_before is None
    assert not query.excluded_states


def test_stuck_means_unchanged_that_long_and_not_terminal() -> None:
    query = build_filter(stuck_longer_than="30m").query(now=NOW)
    assert query.updated_before == NOW - timedelta(minutes=30)
    assert set(query.excluded_states) == TERMINAL_STATES == {"activated", "completed", "cancelled"}
    sql, params = where_sql(query)
    assert sql == "WHERE w.updated_at <= $1 AND w.state <> ALL($2::text[])"
    assert params == [NOW - timedelta(minutes=30), sorted(TERMINAL_STATES)]


def test_the_filter_passes_its_values_through() -> None:
    wid = uuid.uuid4()
    flt = build_filter(
        workflow_ids=[str(wid)],
        states=["failed"],
        line_item_type="subscription",
        order_id=" o-1 ",
        msisdn="+31600000000",
        error_code="provider_rejected",
        limit=7,
    )
    assert flt.query(now=NOW) == WorkflowQuery(
        workflow_ids=(wid,),
        states=("failed",),
        line_item_type="SUBSCRIPTION",
        order_id="o-1",
        msisdn="+31600000000",
        error_code="provider_rejected",
        limit=7,
    )


def test_an_empty_query_has_no_where_clause() -> None:
    assert where_sql(WorkflowQuery()) == ("", [])


def test_every_condition_is_anded_with_its_own_parameter() -> None:
    wid = uuid.uuid4()
    sql, params = where_sql(
        WorkflowQuery(workflow_ids=[wid], states=["failed"], msisdn="+31600000000", error_code="x")
    )
    assert sql.startswith("WHERE w.workflow_id = ANY($1::uuid[]) AND w.state = ANY($2::text[]) AND (")
    assert sql.count("= $3") == 4  # the number is looked for in the spec and in the context's three
    assert sql.endswith(" AND w.error ->> 'code' = $4")
    assert params == [[wid], ["failed"], "+31600000000", "x"]
