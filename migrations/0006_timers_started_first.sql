-- Throughput (issue #16): data commits no longer NOTIFY, and a backlog starts finishing at once.
--
-- NOTIFY takes a cluster-wide lock from its pre-commit until the commit is flushed, so every
-- commit that scheduled a step queued behind every other. Writers in a worker wake their own
-- scheduler in-process; other processes (operators) notify after their commit, outside it; the
-- scheduler's idle poll covers the rest (another worker's timers, a dead worker's claims).
DROP TRIGGER IF EXISTS timers_notify ON timers;
DROP FUNCTION IF EXISTS notify_timers();

-- Steps of work already started run before the first steps of new work. Claiming oldest-due
-- first made a backlog's first completion wait for every order in it to be started; with `fresh`
-- (the first step of a new workflow or order, set at intake) a worker finishes what it began and
-- takes new orders as slots free up.
ALTER TABLE timers ADD COLUMN fresh boolean NOT NULL DEFAULT false;
DROP INDEX IF EXISTS timers_due_idx;
CREATE INDEX timers_due_idx ON timers (fresh, due_at) WHERE fired_at IS NULL;
