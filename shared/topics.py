"""Every Kafka topic name, dead-letter included, in one registry."""

from __future__ import annotations

from dataclasses import dataclass

from shared.events import (
    DeadLetterEvent,
    Envelope,
    EscalationEvent,
    MessageEvent,
    RoutedEvent,
    SlaEvent,
)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    key: str
    description: str
    schema: type[Envelope]
    partitions: int = 6


MESSAGES = TopicSpec(
    "cs.messages.v1",
    "conversation id",
    "Normalised customer messages and ticket activity from intake.",
    MessageEvent,
)
ROUTED = TopicSpec(
    "cs.tickets.routed.v1",
    "ticket id",
    "Routing decisions: category, priority, tier, queue, agent.",
    RoutedEvent,
)
SLA = TopicSpec(
    "cs.sla.v1",
    "ticket id",
    "SLA clock events: started, warning, breached, met, stopped.",
    SlaEvent,
)
ESCALATIONS = TopicSpec(
    "cs.escalations.v1",
    "ticket id",
    "Escalations for second line (from breaches and from routing).",
    EscalationEvent,
)
DEADLETTER = TopicSpec(
    "cs.deadletter.v1",
    "original key",
    "What could not be processed, with the reason.",
    DeadLetterEvent,
    partitions=1,
)

ALL_TOPICS: tuple[TopicSpec, ...] = (MESSAGES, ROUTED, SLA, ESCALATIONS, DEADLETTER)

BY_NAME: dict[str, TopicSpec] = {t.name: t for t in ALL_TOPICS}
