-- Throughput (issue #16): every worker's relay publishes the outbox, and data commits do not NOTIFY.
--
-- NOTIFY takes a cluster-wide lock from its pre-commit until the commit is flushed, so the trigger
-- of 0002 queued every commit that wrote a status event behind every other. Relays are now woken
-- in-process by the writers of their own worker and poll for the rest.
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
DROP FUNCTION IF EXISTS outbox_notify();

-- A relay publishes a row only when no earlier row of its key is still unpublished outside its
-- own batch (store/outbox.py `_CLAIM_SQL`); this answers that per row with one index probe.
-- (`outbox_unpublished_idx`, on id, still serves the claim's ORDER BY id.)
CREATE INDEX outbox_unpublished_key_idx ON outbox (key, id) WHERE published_at IS NULL;
