"""ticketflow's shared library: settings, event schemas, topics, Kafka and PostgreSQL
adapters, metrics, logging and the local stack. Imported by the services, never run
on its own (except the `localstack`, `db` and `asyncapi` commands)."""
