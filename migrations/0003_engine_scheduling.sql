-- Scheduling for the engine. A timer is pending (fired_at NULL) until a worker claims it (sets
-- fired_at and claimed_by) and is deleted when its step is done. At most one pending timer per
-- (workflow or order, kind), so a webhook "poke" moves the existing timer earlier instead of piling
-- up duplicates. The worker heartbeat table makes a dead worker's claims free within seconds.

ALTER TABLE timers ADD COLUMN target text GENERATED ALWAYS AS (coalesce(workflow_id::text, order_id)) STORED;
CREATE UNIQUE INDEX timers_one_pending_idx ON timers (target, kind) WHERE fired_at IS NULL;

CREATE TABLE workers (
    worker_id  text PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now()
);

-- The order workflow's own counters: the generation of its provider calls and whether it was submitted.
ALTER TABLE orders ADD COLUMN generation integer NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN submitted_at timestamptz;
ALTER TABLE orders ADD COLUMN cancelled_at timestamptz;

-- Find a workflow from a provider webhook.
CREATE INDEX workflows_subscription_idx ON workflows ((context ->> 'subscription_id'));
CREATE INDEX orders_provider_order_idx ON orders (provider_order_id);
CREATE INDEX timers_claimed_idx ON timers (claimed_by) WHERE fired_at IS NOT NULL;

CREATE OR REPLACE FUNCTION notify_timers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('timers', '');
    RETURN NULL;
END $$;
CREATE TRIGGER timers_notify AFTER INSERT OR UPDATE OF due_at ON timers
    FOR EACH STATEMENT EXECUTE FUNCTION notify_timers();
