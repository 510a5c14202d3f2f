-- Wake the outbox relay on every insert, so no writer has to remember to NOTIFY.
-- Statement-level: one notification per INSERT statement, however many rows it adds. Postgres
-- delivers notifications at commit (never for rolled-back rows) and folds identical ones sent in
-- one transaction into one. The relay also polls as a fallback for notifications it missed.
CREATE FUNCTION outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify
    AFTER INSERT ON outbox
    FOR EACH STATEMENT
    EXECUTE FUNCTION outbox_notify();
