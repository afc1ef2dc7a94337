-- The version of everything a routed event sets on the ticket (priority, tier, category,
-- channel, shop, and through them the policy and the clocks' limits; the holder and the
-- customer's reference): the `occurred_at` of the latest routed event applied. A routed
-- event stamped at or before it changes nothing, so a stale or redelivered one consumed
-- after a newer one cannot lower the labels or move the clocks. `agent_at` (0003) stays
-- the version of the holder alone, which a resolve also moves (it frees the agent
-- without a routed event) while it leaves the labels as they are. Not backfilled: a
-- ticket last routed before this migration takes its next routed event whatever its age.
ALTER TABLE sla_tickets ADD COLUMN routed_at timestamptz;
