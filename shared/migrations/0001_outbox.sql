-- Transactional outbox shared by every service that publishes: a row is written in the
-- same transaction as the state change it reports, and a relay publishes it to Kafka.
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    producer    text        NOT NULL,
    topic       text        NOT NULL,
    key         text,
    payload     bytea       NOT NULL,
    correlation_id text,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX outbox_producer_id ON outbox (producer, id);

-- Wake the relay of the producer as soon as the writing transaction commits.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE p text;
BEGIN
    FOR p IN SELECT DISTINCT producer FROM new_rows LOOP
        PERFORM pg_notify('ticketflow_outbox', p);
    END LOOP;
    RETURN NULL;
END $$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
