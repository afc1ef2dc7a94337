"""Detecting a broker that lost acknowledged records: the relay's LossDetector and the
consumer's rewind when its position is past the log end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from shared.kafka import rewind_if_past_end
from shared.outbox import LossDetector

T = "cs.sla.v1"


def test_growing_offsets_are_no_loss() -> None:
    d = LossDetector()
    assert d.observe([(T, 0, 0), (T, 0, 1), (T, 1, 0), (T, 0, 2)]) == set()
    assert d.acked == {(T, 0): 2, (T, 1): 0}


def test_an_ack_at_or_below_an_earlier_one_is_loss() -> None:
    d = LossDetector()
    d.observe([(T, 0, 40), (T, 1, 7)])
    # The log was replaced: the first record of the new log gets offset 0.
    assert d.observe([(T, 0, 0), (T, 1, 8)]) == {(T, 0)}
    # The same offset again (a broker that acknowledged into a topic it then dropped).
    d2 = LossDetector()
    d2.observe([(T, 3, 0)])
    assert d2.observe([(T, 3, 0)]) == {(T, 3)}


def test_a_log_end_at_or_below_an_acked_offset_is_loss() -> None:
    d = LossDetector()
    d.observe([(T, 0, 9), (T, 1, 4), (T, 2, 0)])
    # offset 9 acknowledged: the log must end at 10 or later.
    ends = {(T, 0): 10, (T, 1): 4, (T, 2): 0, (T, 5): 0}
    assert d.check(ends) == {(T, 1), (T, 2)}  # (T, 5) was never written by us


def test_forget_starts_a_partition_over() -> None:
    d = LossDetector()
    d.observe([(T, 0, 9), (T, 1, 3)])
    d.forget([(T, 0)])
    assert d.observe([(T, 0, 0)]) == set()
    assert d.acked == {(T, 0): 0, (T, 1): 3}


@dataclass
class _Consumer:
    rewound: list[TopicPartition] = field(default_factory=list)

    async def seek_to_beginning(self, *tps: Any) -> None:
        self.rewound.extend(tps)


async def test_consumer_rewinds_only_when_past_the_log_end() -> None:
    c = _Consumer()
    tp = TopicPartition(T, 0)
    assert not await rewind_if_past_end(c, tp, 10, 10, "test")  # type: ignore[arg-type]
    assert not await rewind_if_past_end(c, tp, 3, 10, "test")  # type: ignore[arg-type]
    assert await rewind_if_past_end(c, tp, 11, 2, "test")  # type: ignore[arg-type]
    assert c.rewound == [tp]


def test_log_end_is_checked_against_the_first_offset_of_the_latest_batch() -> None:
    d = LossDetector()
    d.observe([(T, 0, 0), (T, 0, 1)])
    d.observe([(T, 0, 5), (T, 0, 6), (T, 0, 7)])  # one batch of three records
    # A broker whose log end trails the last record (Tansu: last batch base + 1) is fine.
    assert d.check({(T, 0): 6}) == set()
    assert d.check({(T, 0): 5}) == {(T, 0)}


def test_an_earlier_leaders_offsets_guard_later_acks_and_the_log_end() -> None:
    d = LossDetector()
    d.remember([(T, 0, 30, 25)])  # highest 30; its last batch started at 25
    assert d.check({(T, 0): 26}) == set()  # a log end trailing the last record is fine
    assert d.check({(T, 0): 0}) == {(T, 0)}  # the broker restarted while no relay led
    assert d.observe([(T, 0, 2)]) == {(T, 0)}
