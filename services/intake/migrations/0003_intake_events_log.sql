-- intake_events is intake's outbox (shared/outbox_log.py, docs/intake.md "Durability"):
-- each row gets a seq and the id of the transaction that wrote it, and the relay publishes
-- the rows in (xid, seq) order from its cursor in outbox_log_cursor; intake writes no
-- outbox row any more.
ALTER TABLE intake_events ADD COLUMN seq bigint, ADD COLUMN xid xid8;

-- The rows already there, in arrival order, all with this migration's transaction id.
UPDATE intake_events e SET seq = o.n, xid = pg_current_xact_id()
FROM (
    SELECT source, source_event_id,
           row_number() OVER (ORDER BY received_at, source, source_event_id) AS n
    FROM intake_events
) o
WHERE e.source = o.source AND e.source_event_id = o.source_event_id;

ALTER TABLE intake_events
    ALTER COLUMN seq SET NOT NULL,
    ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY,
    ALTER COLUMN xid SET NOT NULL,
    ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
SELECT setval(pg_get_serial_sequence('intake_events', 'seq'), coalesce(max(seq), 0) + 1, false)
FROM intake_events;
CREATE INDEX intake_events_log ON intake_events (xid, seq);

-- The cursor: the rows still waiting in the shared outbox (not yet published) and every
-- row after them are published from the log; those before were published already.
INSERT INTO outbox_log_cursor (producer, xid, seq, max_seq)
SELECT 'intake', pg_current_xact_id(), s, s FROM (
    SELECT coalesce(
        (SELECT min(e.seq) - 1 FROM intake_events e
         JOIN outbox o ON o.producer = 'intake' AND o.correlation_id = e.message_id),
        (SELECT max(seq) FROM intake_events),
        0
    ) AS s
) c;
DELETE FROM outbox WHERE producer = 'intake';
DELETE FROM outbox_sent WHERE producer = 'intake';
DELETE FROM outbox_wakeup WHERE producer = 'intake';
