-- When the ticket last came back after a resolution (a ticket.reopened event): the start of
-- a resolution clock that a routed event stamped after it brings (a reopen that moves the
-- ticket to second line, whose policy has a resolution clock the earlier one had not).
-- Such a routed event names the message it was decided on, received before the
-- resolution, so without this it could not tell a reopened ticket from a resolved one.
ALTER TABLE sla_tickets ADD COLUMN reopened_at timestamptz;
