"""sla_watch: holds an SLA clock for every ticket and emits started, warning, breached,
met and stopped events on time, exactly once per ticket, clock and instance."""
