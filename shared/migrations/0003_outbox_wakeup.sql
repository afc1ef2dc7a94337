-- How each producer's relay learns of new outbox rows, as its relay declares when it takes
-- the lead (OutboxRelay, ``wake_on_notify``): notify = true, the trigger below wakes it
-- with a NOTIFY as each writing transaction commits (and it polls every second as well);
-- notify = false, it polls on a short interval of its own and the trigger sends nothing
-- for that producer's rows. A producer without a row is notified, as before.
--
-- Why a relay may not want it: a NOTIFY makes its transaction take PostgreSQL's
-- cluster-wide notify lock from pre-commit until its commit record is flushed, so every
-- transaction that notifies commits after the one before it, each with its own WAL flush.
-- A producer with many small transactions (intake's group commits, hundreds a second)
-- whose relay gathers rows for tens of milliseconds anyway gets nothing from the wake-up
-- and pays for it in every commit. The relay writes its row itself, so the flag cannot
-- disagree with how the leading relay waits: a relay that is not notified polls.
CREATE TABLE outbox_wakeup (
    producer   text        PRIMARY KEY,
    notify     boolean     NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE p text;
BEGIN
    FOR p IN
        SELECT d.producer FROM (SELECT DISTINCT producer FROM new_rows) d
        WHERE NOT EXISTS (
            SELECT 1 FROM outbox_wakeup w WHERE w.producer = d.producer AND NOT w.notify
        )
    LOOP
        PERFORM pg_notify('ticketflow_outbox', p);
    END LOOP;
    RETURN NULL;
END $$;
