-- One row per ticket and clock; `instance` counts the clock's runs (a new customer message
-- after a reply starts a new run). Transitions are conditional UPDATEs, so each event is
-- emitted once per (ticket, clock, instance) however many instances race for it.
CREATE TABLE sla_clocks (
    ticket_id        text        NOT NULL,
    clock            text        NOT NULL,
    instance         int         NOT NULL DEFAULT 1,
    state            text        NOT NULL,
    conversation_id  text        NOT NULL,
    shop_id          text,
    correlation_id   text,
    started_at       timestamptz NOT NULL,
    deadline         timestamptz NOT NULL,
    warn_at          timestamptz NOT NULL,
    limit_seconds    double precision NOT NULL,
    warned_at        timestamptz,
    breached_at      timestamptz,
    stopped_at       timestamptz,
    last_reply_at    timestamptz,
    PRIMARY KEY (ticket_id, clock)
);
CREATE INDEX sla_clocks_running_deadline ON sla_clocks (deadline) WHERE state = 'running';
CREATE INDEX sla_clocks_running_warn ON sla_clocks (warn_at) WHERE state = 'running' AND warned_at IS NULL;

-- Labels learnt from routing decisions (priority, tier, category) per ticket.
CREATE TABLE sla_tickets (
    ticket_id  text PRIMARY KEY,
    priority   text,
    tier       text,
    category   text,
    last_reply_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Messages already applied (idempotent consumption).
CREATE TABLE sla_seen (
    message_id text PRIMARY KEY,
    seen_at    timestamptz NOT NULL DEFAULT now()
);
