-- Agent roster, assignment state of each ticket, and the ticket history.
CREATE TABLE router_agents (
    agent_id    text PRIMARY KEY,
    name        text        NOT NULL DEFAULT '',
    tier        text        NOT NULL CHECK (tier IN ('bot', 'L1', 'L2')),
    skills      text[]      NOT NULL DEFAULT '{}',
    capacity    int         NOT NULL CHECK (capacity >= 0),
    load        int         NOT NULL DEFAULT 0 CHECK (load >= 0),
    presence    text        NOT NULL DEFAULT 'offline'
                            CHECK (presence IN ('online', 'away', 'offline')),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- Capacity is enforced by the database, whatever the number of router instances.
    CONSTRAINT router_agents_load_within_capacity CHECK (load <= capacity)
);

ALTER TABLE router_tickets
    ADD COLUMN skills        text[]      NOT NULL DEFAULT '{}',
    ADD COLUMN priority_rank int         NOT NULL DEFAULT 0,
    ADD COLUMN due_at        timestamptz,
    ADD COLUMN queued_at     timestamptz,
    ADD COLUMN assigned_at   timestamptz,
    ADD COLUMN last_agent_id text,
    ADD COLUMN escalated     boolean     NOT NULL DEFAULT false,
    ADD COLUMN last_routed   jsonb;

-- The waiting queue: open, unassigned tickets by tier, priority, then SLA due time.
CREATE INDEX router_tickets_queue ON router_tickets (tier, priority_rank DESC, due_at)
    WHERE status = 'open' AND agent_id IS NULL;
CREATE INDEX router_tickets_agent ON router_tickets (agent_id) WHERE agent_id IS NOT NULL;

CREATE TABLE router_history (
    id          bigserial PRIMARY KEY,
    ticket_id   text        NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    action      text        NOT NULL,  -- decided | queued | assigned | reassigned | escalated | released | resolved
    agent_id    text,
    from_agent  text,
    tier        text,
    detail      text        NOT NULL DEFAULT ''
);
CREATE INDEX router_history_ticket ON router_history (ticket_id, id);
