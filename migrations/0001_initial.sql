-- The engine's tables. Postgres is the source of truth: every workflow, every step's intent and
-- outcome, every consumed event and every status event to publish lives here.

-- One row per CRM order: the provider order it maps to and the order-level state last emitted.
CREATE TABLE orders (
    order_id          text PRIMARY KEY,                 -- the CRM orderId
    customer          jsonb NOT NULL,
    metadata          jsonb NOT NULL DEFAULT '{}',
    provider_order_id text,
    state             text NOT NULL,                    -- derived order state (status events)
    status_sequence   integer NOT NULL DEFAULT 0,       -- sequence of order-level status events
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- One durable state machine per line item.
CREATE TABLE workflows (
    workflow_id        uuid PRIMARY KEY,
    order_id           text NOT NULL REFERENCES orders (order_id),
    line_item_id       text NOT NULL,
    line_item_type     text NOT NULL,
    definition_version integer NOT NULL,               -- which machine definition wrote `state`
    state              text NOT NULL,
    spec               jsonb NOT NULL,                  -- the line item as the CRM sent it, secrets removed
    secrets            jsonb,                           -- porting credentials; erased once the port is done
    context            jsonb NOT NULL DEFAULT '{}',     -- what we learned: provider ids, numbers, dates
    generation         integer NOT NULL DEFAULT 0,      -- bumped by amendments and replays; part of keys
    sequence           integer NOT NULL DEFAULT 0,      -- last status event sequence for this line item
    version            integer NOT NULL DEFAULT 0,      -- bumped by every write (optimistic check)
    resume_state       text,                            -- where a replay resumes a failed workflow
    error              jsonb,                           -- {code, message, retryable, step, provider}
    attempts           integer NOT NULL DEFAULT 0,      -- attempts of the current step
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, line_item_id)
);
CREATE INDEX workflows_state_idx ON workflows (state, updated_at);

-- Every state change, in order: the history an operator reads.
CREATE TABLE transitions (
    id          bigserial PRIMARY KEY,
    workflow_id uuid NOT NULL REFERENCES workflows (workflow_id),
    sequence    integer NOT NULL,
    event       text NOT NULL,
    from_state  text NOT NULL,
    to_state    text NOT NULL,
    cause       text NOT NULL,                          -- crm event id, webhook id, timer, operator
    details     jsonb NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workflow_id, sequence)
);

-- The step protocol: an intent is stored (key and exact body) before the call is sent, the
-- outcome after. A retry re-sends the stored bytes with the stored key.
CREATE TABLE provider_calls (
    id              bigserial PRIMARY KEY,
    workflow_id     uuid REFERENCES workflows (workflow_id),
    order_id        text NOT NULL REFERENCES orders (order_id),
    step            text NOT NULL,
    generation      integer NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    method          text NOT NULL,
    path            text NOT NULL,
    body            bytea,
    status          text NOT NULL DEFAULT 'intent'
                    CHECK (status IN ('intent', 'succeeded', 'retrying', 'failed', 'skipped', 'rekeyed')),
    attempts        integer NOT NULL DEFAULT 0,
    response_status integer,
    response_body   jsonb,
    error           jsonb,
    latency_ms      integer,
    created_at      timestamptz NOT NULL DEFAULT now(),
    first_sent_at   timestamptz,
    last_sent_at    timestamptz,
    completed_at    timestamptz
);
CREATE INDEX provider_calls_workflow_idx ON provider_calls (workflow_id, id);

-- Inbox: a consumed event's dedup key, written in the same transaction as its effect.
CREATE TABLE inbox (
    source      text NOT NULL,
    event_id    text NOT NULL,
    event_type  text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    "offset"    bigint NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, event_id)
);

-- Transactional outbox: status events written with the state change, published in id order.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    topic        text NOT NULL,
    key          bytea NOT NULL,
    value        bytea NOT NULL,
    headers      jsonb NOT NULL DEFAULT '[]',
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;

-- Durable time: activation dates, lease expiry, retry backoff, porting polls.
CREATE TABLE timers (
    id            bigserial PRIMARY KEY,
    workflow_id   uuid REFERENCES workflows (workflow_id),
    order_id      text REFERENCES orders (order_id),
    kind          text NOT NULL,
    due_at        timestamptz NOT NULL,
    payload       jsonb NOT NULL DEFAULT '{}',
    claimed_by    text,
    claimed_until timestamptz,
    fired_at      timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX timers_due_idx ON timers (due_at) WHERE fired_at IS NULL;

-- Every operator action: who, what, why, on which workflows, the plan and the outcome.
CREATE TABLE operator_audit (
    id           bigserial PRIMARY KEY,
    actor        text NOT NULL,
    action       text NOT NULL,
    reason       text NOT NULL,
    workflow_ids uuid[] NOT NULL DEFAULT '{}',
    filter       jsonb,
    plan         jsonb,
    outcome      jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);
