-- No planner statistics for the stored event document: no query filters on it, and
-- building them was most of autovacuum's ANALYZE of intake_events (100,000 rows, 30,000
-- sampled: 374-438 ms with them, 110-125 ms without). Under load that ANALYZE took a
-- core's worth of CPU for most of a second and held the webhooks behind it (a 100-240 ms
-- stall in the latency timeline each time; docs/intake.md, "Where the tail came from").
ALTER TABLE intake_events ALTER COLUMN event SET STATISTICS 0;
