"""intake: verifies and normalises platform webhooks, stores them durably, and publishes
them to ``cs.messages.v1`` through the transactional outbox."""
