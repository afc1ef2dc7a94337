-- One row per escalation and channel (dedup), and every attempt made.
CREATE TABLE notifier_deliveries (
    escalation_id  text        NOT NULL,
    channel        text        NOT NULL,
    ticket_id      text        NOT NULL,
    status         text        NOT NULL,   -- pending | delivered | failed
    attempts       int         NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    delivered_at   timestamptz,
    last_error     text,
    PRIMARY KEY (escalation_id, channel)
);

CREATE TABLE notifier_attempts (
    id             bigserial PRIMARY KEY,
    escalation_id  text        NOT NULL,
    channel        text        NOT NULL,
    attempt        int         NOT NULL,
    outcome        text        NOT NULL,
    status_code    int,
    detail         text,
    duration_ms    double precision NOT NULL,
    at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifier_attempts_escalation ON notifier_attempts (escalation_id);
