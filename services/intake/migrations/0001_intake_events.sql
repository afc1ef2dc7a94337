-- Every webhook event intake accepted: the idempotency record (source, event id) and the
-- normalised copy that was published (no customer name, phone or address).
CREATE TABLE intake_events (
    source          text        NOT NULL,
    source_event_id text        NOT NULL,
    message_id      text        NOT NULL,
    ticket_id       text        NOT NULL,
    kind            text        NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    event           jsonb       NOT NULL,
    PRIMARY KEY (source, source_event_id)
);
CREATE INDEX intake_events_ticket ON intake_events (ticket_id);
