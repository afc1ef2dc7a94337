-- Who holds a delivery's lease: the notifier instance (lease_owner, stable across its
-- restarts: TICKETFLOW_INSTANCE_ID or host:port) and the lease round (lease_id). A
-- restarted instance, or one that lost a lease's answer to a database fault, hands its
-- stale leases back at once instead of waiting for them to run out.
ALTER TABLE notifier_deliveries
    ADD COLUMN lease_owner text,
    ADD COLUMN lease_id    uuid;
CREATE INDEX notifier_deliveries_leased ON notifier_deliveries (lease_owner)
    WHERE status = 'pending' AND lease_owner IS NOT NULL;
