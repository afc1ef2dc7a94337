"""Kafka through FastStream: the broker factory, readiness, lag, and the consume step.

Commit policy: every subscriber uses ``AckPolicy.NACK_ON_ERROR`` with auto-commit off.
The offset is committed after the handler returns (its effects are durable in
PostgreSQL by then); a transient failure (database down) raises, the message is not
committed and is redelivered; a poison message (undecodable, invalid schema) is sent to
``cs.deadletter.v1`` with the reason (through the service's outbox, ``shared.deadletter``)
and then committed, so it never blocks a partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.cluster import ClusterMetadata
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.middlewares import AckPolicy
from pydantic import ValidationError

from shared import metrics
from shared.deadletter import DeadLetters
from shared.deadletter import event as event_of
from shared.events import Envelope
from shared.logging import correlation, get_logger
from shared.outbox import Ack, Record
from shared.topics import ALL_TOPICS, TopicSpec

log = get_logger(__name__)

E = TypeVar("E", bound=Envelope)

COMMIT_POLICY = AckPolicy.NACK_ON_ERROR


class PermanentError(Exception):
    """A message that can never be processed: dead-letter it instead of retrying."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def make_broker(
    bootstrap_servers: str, service: str, *, graceful_timeout: float = 10.0
) -> KafkaBroker:
    """One broker per service process. No idempotent producer: the local broker has none,
    and consumers are idempotent instead."""
    return KafkaBroker(
        bootstrap_servers,
        client_id=f"ticketflow-{service}",
        acks="all",
        enable_idempotence=False,
        graceful_timeout=graceful_timeout,
        middlewares=[
            KafkaPrometheusMiddleware(
                registry=metrics.REGISTRY, app_name=service, metrics_prefix="faststream"
            )
        ],
        logger=None,
    )


class AssignmentTracker(ConsumerRebalanceListener):  # type: ignore[misc]
    """Records that a group consumer holds its assignment (readiness)."""

    def __init__(self) -> None:
        self.assigned = asyncio.Event()
        self.partitions: set[TopicPartition] = set()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.partitions -= set(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.partitions |= set(assigned)
        self.assigned.set()


def subscriber_options(group_id: str, tracker: AssignmentTracker) -> dict[str, Any]:
    """Options every group subscriber in the project uses."""
    return {
        "group_id": group_id,
        "auto_offset_reset": "earliest",
        "ack_policy": COMMIT_POLICY,
        "listener": tracker,
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 1_000,
    }


async def raw_records(msg: Any) -> tuple[Any, ...]:
    """Decoder of a batch subscriber whose handler validates the records itself: hands
    it the raw aiokafka records as its body (FastStream's per-record JSON decoding would
    be wasted work). Taking them as the body also spares the handler a ``KafkaMessage``
    parameter: FastStream resolves such context parameters through a worker thread on
    every call."""
    raw = msg.raw_message
    return raw if isinstance(raw, tuple) else (raw,)


Client = TypeVar("Client", AIOKafkaProducer, AIOKafkaConsumer)


async def _start(client: Client) -> Client:
    """Start an aiokafka client; a failed start closes what it opened and raises."""
    try:
        await client.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await client.stop()
        raise
    return client


class RelayProducer:
    """The outbox relay's producer: a plain aiokafka producer, started on first use and
    restarted after a failed start, that sends pre-serialised records with the same
    headers FastStream writes (``content-type``, ``correlation_id``), so FastStream
    subscribers read them unchanged. The relay publishes thousands of rows a second and
    FastStream's per-message publish machinery (command objects, middleware scopes) cost
    intake about a tenth of its CPU; everything else publishes through the broker.

    A record the broker has not acknowledged within ``request_timeout_ms`` fails (its row
    stays in the outbox and the relay sends it again). aiokafka's default, 40 s, is how
    long ``stop()`` waited for records in flight while the broker was away: a service
    stopped during a broker outage outlived its grace period.

    Keyed records go out with their partition chosen here, once per key and partition
    count (``KeyPartitions``), by the producer's own partitioner: the same partition
    aiokafka picks (Kafka's default: murmur2 of the key over all partitions), without its
    pure-Python murmur2 on every record."""

    def __init__(
        self, bootstrap_servers: str, service: str, *, request_timeout_ms: int = 5_000
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._client_id = f"ticketflow-{service}-relay"
        self._request_timeout_ms = request_timeout_ms
        self._producer: AIOKafkaProducer | None = None
        self._offsets: AIOKafkaConsumer | None = None
        self._starting = asyncio.Lock()
        self._partitions = KeyPartitions()

    async def _started(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._producer is None:
                self._producer = await _start(
                    AIOKafkaProducer(
                        bootstrap_servers=self._bootstrap,
                        client_id=self._client_id,
                        acks="all",
                        enable_idempotence=False,  # see make_broker
                        linger_ms=1,
                        request_timeout_ms=self._request_timeout_ms,
                        partitioner=self._partitions.partitioner,
                    )
                )
            return self._producer

    async def publish_batch(self, records: Sequence[Record]) -> list[Ack]:
        """Publish ``records`` (topic, key, value, correlation id) and wait for the broker's
        acknowledgements: one (topic, partition, offset) per record, in the order given ([]
        when the broker gives no offsets); raises when the broker did not take them all.

        The records of one partition go out, in the order given, as whole record batches
        (``create_batch``/``send_batch``: one builder per partition, another when one is
        full), not one ``send`` and one future per record. The broker answers a batch with
        its base offset; a record's offset is that plus its index in the batch. aiokafka
        sends a partition's batches one at a time (a partition with a produce request in
        flight is muted), so they land in order, as single sends did."""
        producer = await self._started()
        cluster = producer.client.cluster
        parts: dict[str, list[int]] = {}
        groups: dict[tuple[str, int], list[int]] = {}  # (topic, partition) -> record indexes
        for i, (topic, key, _, _) in enumerate(records):
            if topic not in parts:
                parts[topic] = sorted(await producer.partitions_for(topic))
            partition = self._partitions.get(topic, key, cluster, parts[topic])
            groups.setdefault((topic, partition), []).append(i)
        sent: list[tuple[asyncio.Future[Any], str, int, list[int]]] = []
        try:
            for (topic, partition), indexes in groups.items():
                batch = producer.create_batch()
                members: list[int] = []
                for i in indexes:
                    _, key, value, correlation_id = records[i]
                    headers = [("content-type", b"application/json")]
                    if correlation_id:
                        headers.append(("correlation_id", correlation_id.encode()))
                    if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                        # Full: it goes, and a new one takes the record (an empty batch takes
                        # any record, as a single send does).
                        fut = await producer.send_batch(batch, topic, partition=partition)
                        sent.append((fut, topic, partition, members))
                        batch = producer.create_batch()
                        members = []
                        batch.append(key=key, value=value, timestamp=None, headers=headers)
                    members.append(i)
                fut = await producer.send_batch(batch, topic, partition=partition)
                sent.append((fut, topic, partition, members))
            results = await asyncio.gather(*(fut for fut, _, _, _ in sent))
        except BaseException:
            for fut, _, _, _ in sent:  # nobody waits for them: retrieve their outcome
                fut.add_done_callback(_retrieve)
            raise
        acks: list[Ack] = [("", 0, 0)] * len(records)
        for md, (_, topic, partition, members) in zip(results, sent, strict=True):
            if md is None or md.offset is None:  # acks=0: the broker gives no offsets
                return []
            for n, i in enumerate(members):
                acks[i] = (topic, partition, md.offset + n)
        return acks

    async def end_offsets(
        self, partitions: Sequence[tuple[str, int]]
    ) -> Mapping[tuple[str, int], int]:
        """Log end offsets of (topic, partition)s (the relay's check that the broker kept
        what it acknowledged), through a group-less consumer started on first use.

        A partition the broker does not have answers 0: nothing it acknowledged there is
        left. Its topic was deleted, or came back with fewer partitions: a broker that
        creates a topic when a client first names it gives it its default count (Tansu back
        empty, named by a client before the topics are created again). aiokafka's
        ``end_offsets`` waits for such a partition until the caller gives up, at every
        check, and the relay publishes nothing while its check fails. So the partitions
        there are come from the broker at each call (metadata of all topics, which creates
        none), and when one is missing the producer refreshes its metadata: the re-publish
        goes to the partitions there are."""
        producer = await self._started()
        async with self._starting:
            if self._offsets is None:
                self._offsets = await _start(
                    AIOKafkaConsumer(
                        bootstrap_servers=self._bootstrap,
                        client_id=self._client_id + "-offsets",
                        enable_auto_commit=False,
                        request_timeout_ms=self._request_timeout_ms,
                    )
                )
        cluster: ClusterMetadata = await producer.client.fetch_all_metadata()
        present = [(t, p) for t, p in partitions if p in (cluster.partitions_for_topic(t) or ())]
        missing = sorted(set(partitions) - set(present))
        ends = await self._offsets.end_offsets([TopicPartition(t, p) for t, p in present])
        found = {(tp.topic, tp.partition): int(o) for tp, o in ends.items()}
        if missing:
            log.warning(
                "the broker does not have partitions the relay wrote: their records are lost",
                partitions=[f"{t}/{p}" for t, p in missing],
            )
            await producer.client.force_metadata_update()
            found.update(dict.fromkeys(missing, 0))
        return found

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()
        offsets, self._offsets = self._offsets, None
        if offsets is not None:
            with contextlib.suppress(Exception):
                await offsets.stop()


class KeyPartitions:
    """The partition of each key, as ``partitioner`` (the producer's) gives it for the
    topic's partitions, remembered per (topic, key) with the partition count it was
    computed for; a changed count computes it again. At most ``limit`` keys are kept (the
    memory is dropped whole when full)."""

    def __init__(self, limit: int = 100_000) -> None:
        self.partitioner = DefaultPartitioner()
        self._limit = limit
        self._known: dict[tuple[str, bytes], tuple[int, int]] = {}

    def get(
        self, topic: str, key: bytes | None, cluster: ClusterMetadata, partitions: list[int]
    ) -> int:
        """The partition of ``key`` among the topic's ``partitions`` (known to the producer:
        ``partitions_for``); a record without a key goes to a partition the partitioner
        draws, as aiokafka does for each such record."""
        available = cluster.available_partitions_for_topic(topic) or ()
        if key is None:
            return int(self.partitioner(None, partitions, list(available)))
        count = len(partitions)
        known = self._known.get((topic, key))
        if known is not None and known[0] == count:
            return known[1]
        # The arguments aiokafka's producer hands its partitioner (a keyed record's
        # partition depends on all partitions only).
        partition = int(self.partitioner(key, partitions, list(available)))
        if len(self._known) >= self._limit:
            self._known.clear()
        self._known[(topic, key)] = (count, partition)
        return partition


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


RETRY_BACKOFF_SECONDS = 0.5
"""How long a handler that failed for a transient fault waits before raising (the message
or batch is then redelivered)."""


async def validated(
    dead: DeadLetters,
    topic: TopicSpec,
    model: type[E],
    value: bytes | None,
    *,
    original: str,
    key: bytes | None,
    correlation_id: str | None = None,
) -> E | None:
    """The record's event, or None when it does not validate: then it is dead-lettered
    (``invalid_schema``, with ``correlation_id``, e.g. the record's header) and counted as
    ``deadletter``. Poison handling of ``consume`` and of batch handlers alike."""
    try:
        return model.model_validate_json(value or b"")
    except ValidationError as exc:
        log.warning("invalid event dead-lettered", topic=topic.name, errors=exc.error_count())
        await dead.record(
            event_of(dead.service, original, key, value, "invalid_schema", str(exc), correlation_id)
        )
        metrics.CONSUMED.labels(dead.service, topic.name, "deadletter").inc()
        return None


async def handled(
    dead: DeadLetters,
    topic: TopicSpec,
    event: E,
    handler: Callable[[E], Awaitable[str]],
    *,
    original: str,
    key: bytes | None,
    value: bytes | None,
    redelivered: str = "message",
) -> str:
    """Run ``handler`` on a valid event under its correlation id; its outcome label. A
    ``PermanentError`` is dead-lettered with its reason (``deadletter``, not yet counted:
    the caller counts outcomes); any other fault counts ``error``, is logged, waits
    ``RETRY_BACKOFF_SECONDS`` and raises, so that the ``redelivered`` (message or batch) is
    not committed and comes again."""
    with correlation(event.correlation_id):
        try:
            return await handler(event)
        except PermanentError as exc:
            log.warning("event dead-lettered", reason=exc.reason, error=str(exc))
            await dead.record(
                event_of(
                    dead.service, original, key, value, exc.reason, str(exc), event.correlation_id
                )
            )
            return "deadletter"
        except Exception:
            metrics.CONSUMED.labels(dead.service, topic.name, "error").inc()
            log.exception(f"handler failed; {redelivered} will be redelivered", topic=topic.name)
            await asyncio.sleep(RETRY_BACKOFF_SECONDS)  # retry backoff for a transient fault
            raise


async def consume(
    dead: DeadLetters,
    topic: TopicSpec,
    msg: KafkaMessage,
    model: type[E],
    handler: Callable[[E], Awaitable[str]],
) -> None:
    """Decode, validate and handle one message; dead-letter poison, re-raise transient.

    ``handler`` returns an outcome label (``ok``, ``duplicate``, ``ignored``) for metrics.
    """
    started = time.perf_counter()
    raw = msg.raw_message
    key = raw.key if not isinstance(raw, tuple) else None
    original = getattr(raw, "topic", topic.name)
    event = await validated(
        dead, topic, model, msg.body, original=original, key=key, correlation_id=msg.correlation_id
    )
    if event is None:
        return
    outcome = await handled(dead, topic, event, handler, original=original, key=key, value=msg.body)
    metrics.CONSUMED.labels(dead.service, topic.name, outcome).inc()
    metrics.PROCESSING_SECONDS.labels(dead.service, topic.name).observe(
        time.perf_counter() - started
    )


async def update_lag(broker: KafkaBroker, service: str) -> None:
    """Set the consumer-lag gauge from each consumer's high watermarks and positions, and
    rewind a consumer whose position is past its partition's log end (``rewind_if_past_end``)."""
    totals: dict[str, int] = {}
    for sub in broker.subscribers:
        consumer = getattr(sub, "consumer", None)
        if consumer is None:
            continue
        try:
            assignment = consumer.assignment()
            for tp in assignment:
                hw = consumer.highwater(tp)
                if hw is None:
                    continue
                pos = await consumer.position(tp)
                if await rewind_if_past_end(consumer, tp, pos, hw, service):
                    continue
                totals[tp.topic] = totals.get(tp.topic, 0) + max(0, hw - pos)
        except Exception as exc:  # rebalancing or not yet joined: try next time
            log.debug("lag not available", error=repr(exc))
            continue
    for topic, lag in totals.items():
        metrics.CONSUMER_LAG.labels(service, topic).set(lag)


async def rewind_if_past_end(
    consumer: AIOKafkaConsumer, tp: TopicPartition, position: int, end: int, service: str
) -> bool:
    """A position past the log end means the broker lost records (a memory-only broker
    restarted, an unclean leader election): the log now is shorter than what this consumer
    read. Re-read the partition from the beginning of the new log (what
    ``auto_offset_reset="earliest"`` does when the broker answers OffsetOutOfRange, which
    not every broker does); handlers are idempotent by event id, so repeats are dropped."""
    if position <= end:
        return False
    log.warning(
        "consumer position past the log end: the broker lost records; re-reading",
        topic=tp.topic,
        partition=tp.partition,
        position=position,
        log_end=end,
    )
    await consumer.seek_to_beginning(tp)
    metrics.CONSUMER_REWINDS.labels(service, tp.topic).inc()
    return True


async def ensure_topics(bootstrap_servers: str, topics: tuple[TopicSpec, ...] = ALL_TOPICS) -> None:
    """Create the project's topics if they do not exist (local stack and tests)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(t.name, num_partitions=t.partitions, replication_factor=1)
            for t in topics
            if t.name not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
    finally:
        await admin.close()
