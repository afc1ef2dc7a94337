-- Status events (ticket.resolved, ticket.reopened) applied, by message id: a redelivered
-- one (at-least-once: a batch applied but its offsets not committed, a relay re-publishing)
-- changes nothing a second time. Written in the transaction that applies the event, like
-- router_decisions for customer messages; kept, as router_decisions and sla_seen are.
CREATE TABLE router_status_events (
    message_id  text PRIMARY KEY,
    ticket_id   text        NOT NULL,
    kind        text        NOT NULL,   -- resolved | reopened
    applied_at  timestamptz NOT NULL DEFAULT now()
);
