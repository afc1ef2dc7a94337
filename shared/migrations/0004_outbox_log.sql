-- A producer's own append-only table read as its outbox (shared/outbox_log.py, LogSource):
-- the relay publishes the table's rows in (xid, seq) order, never deletes them, and keeps
-- here, per producer, where it is (the cursor) and what the broker acknowledged.

-- The last row published, in (xid, seq) order, and the highest seq published (the
-- backlog is the seq values handed out above it).
CREATE TABLE outbox_log_cursor (
    producer   text        PRIMARY KEY,
    xid        xid8        NOT NULL,
    seq        bigint      NOT NULL,
    max_seq    bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- What outbox_sent keeps, without the payload: per batch and partition, the offsets the
-- broker acknowledged (the rows in the order sent: offsets first_offset .. last_offset)
-- and the rows sent there, by their seq (read back from the log table within the
-- (xid, seq) range), for OUTBOX_RETENTION_SECONDS. One row per batch and partition, not
-- per event; purged by sent_at.
CREATE TABLE outbox_log_sent (
    id              bigserial   PRIMARY KEY,
    producer        text        NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    first_offset    bigint      NOT NULL,
    last_offset     bigint      NOT NULL,
    lo_xid          xid8        NOT NULL,
    lo_seq          bigint      NOT NULL,
    hi_xid          xid8        NOT NULL,
    hi_seq          bigint      NOT NULL,
    seqs            bigint[]    NOT NULL,
    sent_at         timestamptz NOT NULL
);
CREATE INDEX outbox_log_sent_producer_sent_at ON outbox_log_sent (producer, sent_at);
