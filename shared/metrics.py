"""Every Prometheus metric the services export, declared once, one comment each.

Label values are bounded: sources, outcomes, priorities, tiers, categories, clocks and
channels come from fixed vocabularies; never an id, a name or free text.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from bisect import bisect_left
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REGISTRY = CollectorRegistry(auto_describe=True)

# With several worker processes (INTAKE_WORKERS > 1, prometheus_client's multiprocess
# mode: see ``metrics_text``) counters and histograms are summed over the workers and a
# gauge shows the largest value among the live ones. One process: no effect.
_GAUGE_MODE: Final = "livemax"

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_LATENESS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300, 3600)
_RESPONSE = (1, 5, 10, 15, 20, 25, 30, 45, 60, 120, 300, 900, 3600)

# --- common to every service -------------------------------------------------------
# Messages a consumer handled, by topic and outcome (ok|duplicate|ignored|stale|deadletter|
# error; stale: an older routed event than one sla_watch already applied).
CONSUMED = Counter(
    "ticketflow_consumed_total",
    "Messages handled by a consumer",
    ["service", "topic", "outcome"],
    registry=REGISTRY,
)
# Time a handler spent on one message.
PROCESSING_SECONDS = Histogram(
    "ticketflow_processing_seconds",
    "Time spent handling one consumed message",
    ["service", "topic"],
    buckets=_LATENCY,
    registry=REGISTRY,
)
# Messages between a consumer group's position and the partition's end, per topic.
CONSUMER_LAG = Gauge(
    "ticketflow_consumer_lag_messages",
    "Consumer lag in messages (high watermark minus position), summed over partitions",
    ["service", "topic"],
    multiprocess_mode=_GAUGE_MODE,
    registry=REGISTRY,
)
# A consumer found its position past the log end (the broker lost records) and re-read.
CONSUMER_REWINDS = Counter(
    "ticketflow_consumer_rewinds_total",
    "Consumer partitions re-read from the beginning because the log end fell below them",
    ["service", "topic"],
    registry=REGISTRY,
)
# Rows waiting in a service's transactional outbox.
OUTBOX_BACKLOG = Gauge(
    "ticketflow_outbox_backlog",
    "Outbox rows not yet published",
    ["service"],
    multiprocess_mode=_GAUGE_MODE,
    registry=REGISTRY,
)
# Age of the oldest unpublished outbox row.
OUTBOX_OLDEST_AGE = Gauge(
    "ticketflow_outbox_oldest_age_seconds",
    "Age of the oldest unpublished outbox row",
    ["service"],
    multiprocess_mode=_GAUGE_MODE,
    registry=REGISTRY,
)
# A relay reading its producer's own log table (shared/outbox_log.py) publishes only rows
# of transactions older than every one still running: how long the oldest transaction has
# run while rows wait behind it (0: nothing held back).
OUTBOX_HELD_BACK = Gauge(
    "ticketflow_outbox_held_back_seconds",
    "How long the oldest open transaction has held the relay's publishing back",
    ["service"],
    multiprocess_mode=_GAUGE_MODE,
    registry=REGISTRY,
)
# Outbox rows published to Kafka by the relay.
OUTBOX_PUBLISHED = Counter(
    "ticketflow_outbox_published_total",
    "Outbox rows published to Kafka",
    ["service", "topic"],
    registry=REGISTRY,
)
# Relay publish attempts that failed (broker down, timeout).
OUTBOX_PUBLISH_ERRORS = Counter(
    "ticketflow_outbox_publish_errors_total",
    "Outbox relay batches that failed to publish",
    ["service"],
    registry=REGISTRY,
)
# The broker lost records it had acknowledged to the relay (per partition detected), and
# the retained rows the relay re-published because of it.
OUTBOX_BROKER_LOSSES = Counter(
    "ticketflow_outbox_broker_losses_total",
    "Partitions on which the broker lost records it had acknowledged to the outbox relay",
    ["service", "topic"],
    registry=REGISTRY,
)
OUTBOX_REPUBLISHED = Counter(
    "ticketflow_outbox_republished_total",
    "Retained outbox rows re-published after the broker lost acknowledged records",
    ["service", "topic"],
    registry=REGISTRY,
)
# Events sent to the dead-letter topic, with a bounded reason.
DEADLETTERED = Counter(
    "ticketflow_deadlettered_total",
    "Messages sent to cs.deadletter.v1",
    ["service", "reason"],
    registry=REGISTRY,
)
# 1 when the service's dependencies answer (database, broker, consumers assigned).
READY = Gauge(
    "ticketflow_ready",
    "1 when the service is ready",
    ["service"],
    multiprocess_mode=_GAUGE_MODE,
    registry=REGISTRY,
)

# --- intake ------------------------------------------------------------------------
# Webhooks by source adapter and outcome (accepted|duplicate|unauthorized|invalid|...).
INTAKE_WEBHOOKS = Counter(
    "intake_webhooks_total", "Webhooks received", ["source", "outcome"], registry=REGISTRY
)
# Time from request to answer.
INTAKE_REQUEST_SECONDS = Histogram(
    "intake_request_seconds",
    "Webhook request duration",
    ["source"],
    buckets=_LATENCY,
    registry=REGISTRY,
)
# 1 while intake refuses new webhooks with 429 (outbox backlog or database latency bound).
INTAKE_OVERLOADED = Gauge(
    "intake_overloaded",
    "1 while intake sheds load with 429",
    multiprocess_mode=_GAUGE_MODE,
    registry=REGISTRY,
)

# --- router ------------------------------------------------------------------------
# Routing decisions by outcome vocabulary.
ROUTER_DECISIONS = Counter(
    "router_decisions_total",
    "Routing decisions",
    ["priority", "tier", "category"],
    registry=REGISTRY,
)
# Time the pure decision function took.
ROUTER_DECISION_SECONDS = Histogram(
    "router_decision_seconds",
    "Time to classify and decide one message",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
    registry=REGISTRY,
)

# Open tickets waiting for an agent, per tier.
ROUTER_QUEUE_DEPTH = Gauge(
    "router_queue_depth",
    "Tickets waiting for an agent",
    ["tier"],
    multiprocess_mode=_GAUGE_MODE,
    registry=REGISTRY,
)
# Age of the oldest waiting ticket, per tier.
ROUTER_QUEUE_OLDEST_AGE_SECONDS = Gauge(
    "router_queue_oldest_age_seconds",
    "Age of the oldest ticket waiting for an agent",
    ["tier"],
    multiprocess_mode=_GAUGE_MODE,
    registry=REGISTRY,
)
# Tickets given to an agent (new, from the queue, or after an escalation).
ROUTER_ASSIGNMENTS = Counter(
    "router_assignments_total", "Tickets assigned to an agent", ["tier"], registry=REGISTRY
)
# Tickets moved from one agent or tier to another (escalation, manual).
ROUTER_REASSIGNMENTS = Counter(
    "router_reassignments_total", "Tickets reassigned", ["reason"], registry=REGISTRY
)

# --- sla_watch ---------------------------------------------------------------------
# Breach events emitted.
SLA_BREACHES = Counter(
    "sla_breaches_total",
    "SLA breaches",
    ["sla", "priority", "tier", "category"],
    registry=REGISTRY,
)
# Warning events emitted.
SLA_WARNINGS = Counter("sla_warnings_total", "SLA warnings", ["sla"], registry=REGISTRY)
# Clocks met (stopped by a reply or resolution before the deadline).
SLA_MET = Counter("sla_met_total", "SLA clocks met in time", ["sla"], registry=REGISTRY)
# Clocks now running.
SLA_OPEN_CLOCKS = Gauge(
    "sla_open_clocks",
    "Running SLA clocks",
    ["sla"],
    multiprocess_mode=_GAUGE_MODE,
    registry=REGISTRY,
)
# Emit time minus deadline of each breach.
SLA_BREACH_LATENESS = Histogram(
    "sla_breach_lateness_seconds",
    "How late a breach event was emitted after its deadline",
    buckets=_LATENESS,
    registry=REGISTRY,
)
# Time from a customer's message to the first reply.
SLA_FIRST_RESPONSE = Histogram(
    "sla_first_response_seconds",
    "Time to first agent reply",
    buckets=_RESPONSE,
    registry=REGISTRY,
)

# --- notifier ----------------------------------------------------------------------
# Delivery attempts by channel and outcome (delivered|retry|failed|duplicate).
NOTIFIER_DELIVERIES = Counter(
    "notifier_deliveries_total",
    "Notification delivery attempts",
    ["channel", "outcome"],
    registry=REGISTRY,
)
# Duration of one delivery attempt.
NOTIFIER_DELIVERY_SECONDS = Histogram(
    "notifier_delivery_seconds",
    "Duration of one delivery attempt",
    ["channel"],
    buckets=_LATENCY,
    registry=REGISTRY,
)
# Deliveries put on the durable queue, by channel kind and level (1 = first notice).
NOTIFIER_QUEUED = Counter(
    "notifier_queued_total",
    "Deliveries queued",
    ["channel", "level"],
    registry=REGISTRY,
)
# Deliveries waiting in the queue now, by configured channel name (names come from config).
NOTIFIER_QUEUE_DEPTH = Gauge(
    "notifier_queue_depth",
    "Deliveries pending",
    ["channel"],
    multiprocess_mode=_GAUGE_MODE,
    registry=REGISTRY,
)
# Escalations folded into a digest because they outran the channel's rate.
NOTIFIER_DIGESTED = Counter(
    "notifier_digested_total",
    "Escalations sent as part of a digest",
    ["channel"],
    registry=REGISTRY,
)
# Digest messages built.
NOTIFIER_DIGESTS = Counter(
    "notifier_digests_total", "Digest messages built", ["channel"], registry=REGISTRY
)
# Escalations re-sent to a further level of their route, by that level.
NOTIFIER_REESCALATIONS = Counter(
    "notifier_reescalations_total",
    "Escalations moved to a further level",
    ["level"],
    registry=REGISTRY,
)
# Acknowledgements, by way (link|api).
NOTIFIER_ACKS = Counter(
    "notifier_acknowledgements_total", "Escalations acknowledged", ["via"], registry=REGISTRY
)
# Routed escalations neither acknowledged nor resolved.
NOTIFIER_UNACKED = Gauge(
    "notifier_unacknowledged_escalations",
    "Routed escalations not yet acknowledged or resolved",
    multiprocess_mode=_GAUGE_MODE,
    registry=REGISTRY,
)
# Age of the oldest of them.
NOTIFIER_UNACKED_OLDEST = Gauge(
    "notifier_unacknowledged_oldest_seconds",
    "Age of the oldest unacknowledged escalation",
    multiprocess_mode=_GAUGE_MODE,
    registry=REGISTRY,
)
# From the escalation event's time to the first delivery attempt of a level-1 notice.
NOTIFIER_FIRST_ATTEMPT_SECONDS = Histogram(
    "notifier_first_attempt_seconds",
    "Escalation event to first delivery attempt",
    ["channel"],
    buckets=_LATENCY,
    registry=REGISTRY,
)


class Tally:
    """A counter and a histogram with the same first labels, counted per event in plain
    numbers and added to prometheus_client's values every ``interval`` seconds, before
    every scrape of this process (``metrics_text``) and on ``flush``.

    In multiprocess mode every ``inc`` and ``observe`` writes the process's mmap file under
    a lock: a counter and a histogram per webhook were three such writes, 4.7 µs of an
    idle core (docs/intake.md). Here an event costs a few dictionary and list updates;
    the writes happen a few times a second, whatever the rate. The price: a scrape served
    by another worker process sees this one's last ``interval`` seconds late, and a
    process killed with SIGKILL loses them."""

    def __init__(self, counter: Counter, histogram: Histogram, interval: float = 0.1) -> None:
        self._counter = counter
        self._histogram = histogram
        self._interval = interval
        self._bounds: tuple[float, ...] = tuple(histogram._upper_bounds)
        self._counts: dict[tuple[str, ...], int] = {}
        # per histogram labels: the count in each bucket (non-cumulative), then the sum
        self._observed: dict[tuple[str, ...], list[float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        _TALLIES.add(self)

    def record(
        self, counter_labels: tuple[str, ...], histogram_labels: tuple[str, ...], seconds: float
    ) -> None:
        """One event: +1 on the counter's ``counter_labels``, ``seconds`` observed on the
        histogram's ``histogram_labels``. Call it from the running event loop."""
        counts = self._counts
        counts[counter_labels] = counts.get(counter_labels, 0) + 1
        observed = self._observed.get(histogram_labels)
        if observed is None:
            observed = self._observed[histogram_labels] = [0.0] * (len(self._bounds) + 1)
        # the first bucket whose upper bound is >= seconds, as Histogram.observe picks it
        observed[bisect_left(self._bounds, seconds)] += 1
        observed[-1] += seconds
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self.flush)

    def flush(self) -> None:
        """Add what was counted since the last flush to prometheus_client's values."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        counts, self._counts = self._counts, {}
        observed, self._observed = self._observed, {}
        for labels, n in counts.items():
            self._counter.labels(*labels).inc(n)
        for labels, buckets in observed.items():
            child = self._histogram.labels(*labels)
            # Histogram.observe adds to the sum and to one bucket per observation (the
            # exposition makes them cumulative); the same values in bulk, equal by test.
            child._sum.inc(buckets[-1])
            for value, in_bucket in zip(child._buckets, buckets[:-1], strict=True):
                if in_bucket:
                    value.inc(in_bucket)


# Flushed before every scrape of this process.
_TALLIES: weakref.WeakSet[Tally] = weakref.WeakSet()


def metrics_text() -> bytes:
    """The exposition of this process, or of every worker process when
    ``PROMETHEUS_MULTIPROC_DIR`` is set (uvicorn workers writing to shared files)."""
    for tally in list(_TALLIES):
        tally.flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def process_stopped() -> None:
    """A worker leaving: its live gauges stop counting (multiprocess mode only)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
