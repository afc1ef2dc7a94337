-- The durable delivery queue, escalation levels, acknowledgements and digests.
-- An escalation is stored once (dedup on its id); each (escalation, level, channel) is
-- one delivery row that the delivery worker sends and retries from this table.
CREATE TABLE notifier_escalations (
    escalation_id  text        PRIMARY KEY,
    ticket_id      text        NOT NULL,
    route          text,                    -- NULL: no route matched (generic only)
    payload        jsonb       NOT NULL,    -- the EscalationEvent as received
    level          int         NOT NULL DEFAULT 1,
    next_level_at  timestamptz,             -- NULL: no further level
    received_at    timestamptz NOT NULL DEFAULT now(),
    acked_at       timestamptz,
    acked_by       text,
    acked_via      text,
    resolved_at    timestamptz
);
CREATE INDEX notifier_escalations_next ON notifier_escalations (next_level_at)
    WHERE acked_at IS NULL AND resolved_at IS NULL AND next_level_at IS NOT NULL;
CREATE INDEX notifier_escalations_open ON notifier_escalations (received_at)
    WHERE acked_at IS NULL AND resolved_at IS NULL;
CREATE INDEX notifier_escalations_ticket ON notifier_escalations (ticket_id);

ALTER TABLE notifier_deliveries
    ADD COLUMN level            int         NOT NULL DEFAULT 1,
    ADD COLUMN kind             text        NOT NULL DEFAULT 'single',  -- single | digest
    ADD COLUMN next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN first_attempt_at timestamptz,
    ADD COLUMN digest_id        text,      -- set when folded into a digest (status digested)
    ADD COLUMN deadlettered_at  timestamptz;
ALTER TABLE notifier_deliveries DROP CONSTRAINT notifier_deliveries_pkey;
ALTER TABLE notifier_deliveries ADD PRIMARY KEY (escalation_id, level, channel);
CREATE INDEX notifier_deliveries_due ON notifier_deliveries (channel, kind, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX notifier_deliveries_digest ON notifier_deliveries (digest_id)
    WHERE digest_id IS NOT NULL;
CREATE INDEX notifier_deliveries_to_deadletter ON notifier_deliveries (channel)
    WHERE status = 'failed' AND deadlettered_at IS NULL;

CREATE TABLE notifier_digests (
    digest_id   text        PRIMARY KEY,
    channel     text        NOT NULL,
    count       int         NOT NULL,
    summary     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE notifier_attempts ADD COLUMN level int NOT NULL DEFAULT 1;
