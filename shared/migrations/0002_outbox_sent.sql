-- Published outbox rows, kept for a bounded time (OUTBOX_RETENTION_SECONDS) after the
-- broker acknowledged them, with the partition and offset of that acknowledgement. If
-- the broker later loses acknowledged records (a memory-only broker restarted, an
-- unclean leader election in Kafka), the relay re-publishes the kept rows of the
-- partitions that lost data, in id order. The relay moves a row here from ``outbox`` in
-- the transaction that used to delete it, so ``outbox`` still holds only unpublished rows.
CREATE TABLE outbox_sent (
    producer        text        NOT NULL,
    id              bigint      NOT NULL,
    topic           text        NOT NULL,
    key             text,
    payload         bytea       NOT NULL,
    correlation_id  text,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    sent_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (producer, id)
);
CREATE INDEX outbox_sent_producer_sent_at ON outbox_sent (producer, sent_at);

-- Losses the relays detected, one row per partition and detection: a partition that
-- several producers write (cs.escalations.v1: router and sla_watch) may show the loss to
-- one relay only (the others' next acknowledgements can land above what they had), so
-- every relay re-publishes its kept rows of a partition another relay found lost. Each
-- producer's cursor says which detections it has acted on (a leader that stopped before
-- re-publishing leaves its own for the next). Rows older than a day are purged.
CREATE TABLE outbox_broker_losses (
    id              bigserial   PRIMARY KEY,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    detected_by     text        NOT NULL,
    detected_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE outbox_loss_cursor (
    producer text   PRIMARY KEY,
    last_id  bigint NOT NULL
);
