"""``shared.metrics.Tally``: counts and durations kept in process memory, then added to
prometheus_client's values, give the same exposition as ``inc`` and ``observe`` per event."""

from __future__ import annotations

import asyncio
import re

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from shared import metrics

BUCKETS = (0.001, 0.005, 0.01, 0.1, 1.0)
# on a bound, just above one, zero, past the last bound, and ordinary values
SECONDS = [0.0, 0.001, 0.0010001, 0.005, 0.004, 0.01, 0.05, 0.1, 0.2, 1.0, 3.5, 0.0003]


def pair() -> tuple[CollectorRegistry, Counter, Histogram]:
    registry = CollectorRegistry()
    counter = Counter("t_events_total", "events", ["source", "outcome"], registry=registry)
    histogram = Histogram("t_seconds", "durations", ["source"], buckets=BUCKETS, registry=registry)
    return registry, counter, histogram


def exposition(registry: CollectorRegistry) -> str:
    text = generate_latest(registry).decode()
    return "\n".join(line for line in text.splitlines() if "_created" not in line)


def events() -> list[tuple[str, str, float]]:
    out = []
    for i, s in enumerate(SECONDS * 3):
        out.append(("generic" if i % 3 else "shopify", "accepted" if i % 4 else "invalid", s))
    return out


async def test_a_flushed_tally_equals_observing_each_event() -> None:
    direct, counter, histogram = pair()
    for source, outcome, s in events():
        counter.labels(source, outcome).inc()
        histogram.labels(source).observe(s)
    tallied, counter2, histogram2 = pair()
    tally = metrics.Tally(counter2, histogram2)
    for source, outcome, s in events():
        tally.record((source, outcome), (source,), s)
    assert exposition(tallied) != exposition(direct)  # nothing written before the flush
    tally.flush()
    assert exposition(tallied) == exposition(direct)
    assert 't_seconds_bucket{le="+Inf",source="generic"} 24.0' in exposition(tallied)
    tally.flush()  # a second flush adds nothing
    assert exposition(tallied) == exposition(direct)


async def test_a_tally_flushes_by_itself_and_before_a_scrape() -> None:
    registry, counter, histogram = pair()
    tally = metrics.Tally(counter, histogram, interval=0.01)
    tally.record(("generic", "accepted"), ("generic",), 0.002)
    for _ in range(500):  # the timer adds it without a flush or a scrape
        if 't_events_total{outcome="accepted",source="generic"} 1.0' in exposition(registry):
            break
        await asyncio.sleep(0.01)
    assert 't_events_total{outcome="accepted",source="generic"} 1.0' in exposition(registry)

    slow = metrics.Tally(counter, histogram, interval=3600)
    slow.record(("generic", "accepted"), ("generic",), 0.002)
    slow.record(("generic", "accepted"), ("generic",), 0.2)
    assert 't_events_total{outcome="accepted",source="generic"} 1.0' in exposition(registry)
    metrics.metrics_text()  # a scrape of this process flushes every tally first
    text = exposition(registry)
    assert 't_events_total{outcome="accepted",source="generic"} 3.0' in text
    assert re.search(r't_seconds_sum\{source="generic"\} 0\.20[0-9]*', text)
