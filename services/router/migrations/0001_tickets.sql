-- The router's view of each ticket (one per conversation) and every decision it made.
CREATE TABLE router_tickets (
    ticket_id        text PRIMARY KEY,
    conversation_id  text        NOT NULL,
    shop_id          text        NOT NULL,
    channel          text        NOT NULL,
    status           text        NOT NULL DEFAULT 'open',   -- open | resolved
    category         text        NOT NULL,
    priority         text        NOT NULL,
    tier             text        NOT NULL,
    queue            text        NOT NULL,
    agent_id         text,
    reopen_count     int         NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE router_decisions (
    message_id       text PRIMARY KEY,          -- idempotency: one decision per message
    ticket_id        text        NOT NULL,
    message_event_id text        NOT NULL,
    category         text        NOT NULL,
    priority         text        NOT NULL,
    tier             text        NOT NULL,
    queue            text        NOT NULL,
    agent_id         text,
    reasons          jsonb       NOT NULL,
    decided_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX router_decisions_ticket ON router_decisions (ticket_id, decided_at);
