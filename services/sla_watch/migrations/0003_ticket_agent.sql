-- Who holds the ticket, for the escalations a breach publishes: the agent of the latest
-- routed event (null while queued, and after a resolve until the router assigns it again),
-- the customer's masked reference from the routed event, and the version of the holder:
-- the `occurred_at` of the routed event it came from (or the `received_at` of the resolve
-- that released it), so that an older routed event consumed later changes nothing.
ALTER TABLE sla_tickets ADD COLUMN agent_id text;
ALTER TABLE sla_tickets ADD COLUMN customer_ref text;
ALTER TABLE sla_tickets ADD COLUMN agent_at timestamptz;
