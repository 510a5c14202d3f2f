-- A step (of a line item or of an order) runs in one worker at a time: a due timer whose target
-- another worker holds a claim on waits until that claim is done (timers._CLAIM). This index
-- makes that check a lookup among the few claimed rows.
CREATE INDEX timers_claimed_target_idx ON timers (target, kind) WHERE fired_at IS NOT NULL;
