"""A producer's own append-only table read as its outbox (``LogSource``).

A producer whose every event is a row of a table it writes anyway (intake: each accepted
webhook is a row of ``intake_events``) needs no second copy in ``outbox``: the relay
reads the table itself, as a log. The table has a ``seq`` identity and the writing
transaction's id, ``xid xid8 DEFAULT pg_current_xact_id()``, indexed together. The relay
publishes the rows above its cursor in (xid, seq) order, and only those whose transaction
is older than every transaction still running (``xid <
pg_snapshot_xmin(pg_current_snapshot())``): two writers take ``seq`` values in one order
and may commit in the other, and a cursor on ``seq`` alone would pass for good over the
row that committed last. A transaction below the snapshot's xmin has ended, so no row of
it can appear later; a row written after another one was committed has the larger xid, so
the order per key holds (a webhook answered before another was sent). Rows are never
deleted or updated by the relay: nothing bloats.

After the broker's acknowledgements the relay records, in one statement, its cursor
(``outbox_log_cursor``: the last row published, and the highest ``seq`` published) and,
per partition of the batch, the offsets and the rows sent there (``outbox_log_sent``:
first and last offset, the (xid, seq) range and the ``seq`` of each row, in the order
sent): the retention, loss detection and re-publish of ``outbox_sent``, with the rows
read back from the table by range. A crash between the acks and that statement publishes
the batch again: at least once, as with ``outbox``.

The price: any transaction in the cluster that holds a transaction id (another service's,
a manual session left open) holds publishing back until it ends. The relay reports it:
``ticketflow_outbox_held_back_seconds`` is how long the oldest such transaction has run
while rows wait behind it, and a warning names it (pid, database, application, state,
age; never its query) once it passes ``held_back_warning`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import asyncpg

from shared import metrics
from shared.logging import get_logger
from shared.outbox import Ack, KeptSends, acked_query

log = get_logger(__name__)

_RECORD_COLUMNS = (
    "$1, a.t, a.p, a.f, a.l, a.lx::xid8, a.ls, a.hx::xid8, a.hs, ($10::bigint[])[a.s:a.e], now()"
)
_RECORD_ARRAYS = (
    "unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[], $6::text[], $7::bigint[],"
    " $8::text[], $9::bigint[], $11::int[], $12::int[]) AS a(t, p, f, l, lx, ls, hx, hs, s, e)"
)
_INSERT_SENT = (
    "INSERT INTO outbox_log_sent (producer, topic, kafka_partition, first_offset,"
    " last_offset, lo_xid, lo_seq, hi_xid, hi_seq, seqs, sent_at)"
    f" SELECT {_RECORD_COLUMNS} FROM {_RECORD_ARRAYS}"
)
_CURSOR = (
    "INSERT INTO outbox_log_cursor (producer, xid, seq, max_seq)"
    " VALUES ($1, $2::text::xid8, $3, $4)"
    " ON CONFLICT (producer) DO UPDATE SET xid = EXCLUDED.xid, seq = EXCLUDED.seq,"
    " max_seq = EXCLUDED.max_seq, updated_at = now()"
)
# The cursor and the batch's send records in one statement (one transaction).
_PUBLISHED = (
    "WITH c AS ("
    + _CURSOR.replace("$1, $2::text::xid8, $3, $4", "$1, $13::text::xid8, $14, $15")
    + ") "
    + _INSERT_SENT
)
# Re-published kept rows: their send records get the new partition and offsets in place
# (their ids, hence the re-publish's paging, stay), the first group of each record; rows of
# a record that went to another partition (the partition count changed) get a new one.
_REACKED = (
    "WITH u AS ("
    " UPDATE outbox_log_sent s SET kafka_partition = a.p, first_offset = a.f,"
    " last_offset = a.l, lo_xid = a.lx::xid8, lo_seq = a.ls, hi_xid = a.hx::xid8,"
    " hi_seq = a.hs, seqs = ($10::bigint[])[a.s:a.e], sent_at = now()"
    " FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[], $6::text[],"
    " $7::bigint[], $8::text[], $9::bigint[], $11::int[], $12::int[], $13::bigint[])"
    " AS a(t, p, f, l, lx, ls, hx, hs, s, e, id)"
    " WHERE s.producer = $1 AND s.id = a.id"
    ") "
    "INSERT INTO outbox_log_sent (producer, topic, kafka_partition, first_offset,"
    " last_offset, lo_xid, lo_seq, hi_xid, hi_seq, seqs, sent_at)"
    f" SELECT {_RECORD_COLUMNS} FROM unnest($2::text[], $3::int[], $4::bigint[],"
    " $5::bigint[], $6::text[], $7::bigint[], $8::text[], $9::bigint[], $11::int[],"
    " $12::int[], $13::bigint[]) AS a(t, p, f, l, lx, ls, hx, hs, s, e, id)"
    " WHERE a.id IS NULL"
)
_ACKED = acked_query("outbox_log_sent", "last_offset", "first_offset")
# The oldest transaction that holds a transaction id (only those hold the snapshot's
# xmin back), this session's own excepted, prepared transactions included; no query text.
_OLDEST_XACT = (
    "SELECT pid, datname, application_name, state, age FROM ("
    " SELECT pid, datname, application_name, state,"
    " EXTRACT(EPOCH FROM clock_timestamp() - xact_start) AS age"
    " FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
    " UNION ALL"
    " SELECT NULL, database, 'prepared transaction ' || gid, 'prepared',"
    " EXTRACT(EPOCH FROM clock_timestamp() - prepared) FROM pg_prepared_xacts"
    ") t ORDER BY age DESC LIMIT 1"
)
# Send records of lost partitions read per page (each holds the rows of one partition of
# one batch: at most a batch).
_KEPT_RECORDS = 8


class LogSource(KeptSends):
    """``table`` read as ``producer``'s outbox (see the module). ``topic``, ``key``,
    ``payload``, ``correlation_id`` and ``created_at`` are SQL expressions over the
    table's columns (code, never input): what each row publishes."""

    notifies = False
    kept_table = "outbox_log_sent"
    acked_sql = _ACKED
    kept_limit = _KEPT_RECORDS

    def __init__(
        self,
        producer: str,
        table: str,
        *,
        topic: str,
        key: str,
        payload: str,
        correlation_id: str,
        created_at: str,
        held_back_warning: float = 5.0,
    ) -> None:
        self.producer = producer
        self.table = table
        self._held_back_warning = held_back_warning
        self._last_warning = 0.0
        self._xid = "0"
        self._seq = 0
        self._max_seq = 0
        columns = (
            f"xid::text AS xid, seq AS id, {topic} AS topic, {key} AS key,"
            f" {payload} AS payload, {correlation_id} AS correlation_id,"
            f" {created_at} AS created_at"
        )
        # Ordered by the table's columns: an unqualified ``xid`` in ORDER BY would be the
        # output column, its text (where '1004' sorts before '906').
        self._fetch = (
            f"SELECT {columns} FROM {table} e"
            " WHERE (e.xid, e.seq) > ($1::text::xid8, $2::bigint)"
            " AND e.xid < pg_snapshot_xmin(pg_current_snapshot())"
            " ORDER BY e.xid, e.seq LIMIT $3"
        )
        self.kept_sql = (
            "WITH s AS ("
            " SELECT s.id, s.lo_xid, s.lo_seq, s.hi_xid, s.hi_seq, s.seqs"
            " FROM outbox_log_sent s JOIN unnest($2::text[], $3::int[]) AS l(topic, part)"
            " ON s.topic = l.topic AND s.kafka_partition = l.part"
            " WHERE s.producer = $1 AND s.id > $4 ORDER BY s.id LIMIT $5"
            f") SELECT s.id AS page, {columns}"
            f" FROM s CROSS JOIN LATERAL (SELECT * FROM {table} e"
            " WHERE (e.xid, e.seq) >= (s.lo_xid, s.lo_seq)"
            " AND (e.xid, e.seq) <= (s.hi_xid, s.hi_seq) AND e.seq = ANY(s.seqs)) e"
            " ORDER BY s.id, e.xid, e.seq"
        )
        self._waiting = (
            f"SELECT count(*) AS n, min({created_at}) AS oldest FROM {table}"
            " WHERE (xid, seq) > ($1::text::xid8, $2::bigint)"
        )
        # The highest seq handed out (a sequence read: no index needed).
        self._last_seq = f"pg_sequence_last_value(pg_get_serial_sequence('{table}', 'seq'))"

    async def lead(self, conn: asyncpg.Connection, wake_on_notify: bool) -> None:
        row = await conn.fetchrow(
            "SELECT xid::text AS xid, seq, max_seq FROM outbox_log_cursor WHERE producer = $1",
            self.producer,
        )
        # No cursor: nothing of the table was ever published.
        self._xid, self._seq, self._max_seq = (
            (row["xid"], row["seq"], row["max_seq"]) if row else ("0", 0, 0)
        )

    async def fetch(self, conn: asyncpg.Connection, limit: int) -> Sequence[asyncpg.Record]:
        return await conn.fetch(self._fetch, self._xid, self._seq, limit)

    async def published(
        self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record], acks: Sequence[Ack]
    ) -> None:
        last = rows[-1]
        max_seq = max(self._max_seq, max(r["id"] for r in rows))
        if acks:
            await conn.execute(
                _PUBLISHED,
                self.producer,
                *_records(rows, acks),
                last["xid"],
                last["id"],
                max_seq,
            )
        else:
            await conn.execute(_CURSOR, self.producer, last["xid"], last["id"], max_seq)
        self._xid, self._seq, self._max_seq = last["xid"], last["id"], max_seq

    async def reacked(
        self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record], acks: Sequence[Ack]
    ) -> None:
        arrays = _records(rows, acks, page=True)
        await conn.execute(_REACKED, self.producer, *arrays)

    async def backlog(
        self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record], limit: int
    ) -> tuple[int, float]:
        """After a full fetch: the ``seq`` values handed out above the highest one
        published (an upper bound: a duplicate's insert draws a value too), the age of
        the fetch's first row. Otherwise the rows above the cursor, counted (there are
        few), and if more wait there than the fetch could take, what holds them back."""
        if len(rows) >= limit:
            last = await conn.fetchval(f"SELECT {self._last_seq}")
            age = time.time() - rows[0]["created_at"].timestamp()
            metrics.OUTBOX_HELD_BACK.labels(self.producer).set(0)
            return max(len(rows), int(last or 0) - self._max_seq), age
        row = await conn.fetchrow(self._waiting, self._xid, self._seq)
        assert row is not None
        n = int(row["n"])
        age = time.time() - row["oldest"].timestamp() if row["oldest"] is not None else 0.0
        held = 0.0
        if n > len(rows):
            held = await self._held_back(conn, n - len(rows))
        metrics.OUTBOX_HELD_BACK.labels(self.producer).set(held)
        return n, age

    async def _held_back(self, conn: asyncpg.Connection, waiting: int) -> float:
        """Rows above the cursor the fetch did not take: committed after it, or behind a
        transaction still running. How long the oldest such transaction has run; named in
        a warning (at most every 10 s) once that passes ``held_back_warning``."""
        oldest = await conn.fetchrow(_OLDEST_XACT)
        if oldest is None:
            return 0.0
        age = float(oldest["age"] or 0.0)
        now = time.monotonic()
        if age >= self._held_back_warning and now - self._last_warning >= 10.0:
            self._last_warning = now
            log.warning(
                "a long transaction holds publishing back: rows committed after it started"
                " wait until it ends",
                waiting=waiting,
                pid=oldest["pid"],
                database=oldest["datname"],
                application=oldest["application_name"],
                state=oldest["state"],
                running_seconds=round(age, 1),
            )
        return age

    async def probe_backlog(self, pool: asyncpg.Pool, bound: int) -> int:
        """The producer's backlog for backpressure, from any connection: the ``seq``
        values handed out above the highest one published (two index-free reads), and,
        only once that reaches ``bound``, the rows above the cursor counted up to it."""
        n = await pool.fetchval(
            f"SELECT {self._last_seq} - coalesce("
            "(SELECT max_seq FROM outbox_log_cursor WHERE producer = $1), 0)",
            self.producer,
        )
        if n is None or n < bound:
            return max(0, int(n or 0))
        return await self.unpublished(pool, bound)

    async def unpublished(self, pool: asyncpg.Pool, limit: int | None = None) -> int:
        """The rows above the relay's stored cursor, counted (up to ``limit``)."""
        cursor = await pool.fetchrow(
            "SELECT xid::text AS xid, seq FROM outbox_log_cursor WHERE producer = $1",
            self.producer,
        )
        xid, seq = (cursor["xid"], cursor["seq"]) if cursor else ("0", 0)
        return int(
            await pool.fetchval(
                f"SELECT count(*) FROM (SELECT 1 FROM {self.table}"
                " WHERE (xid, seq) > ($1::text::xid8, $2::bigint) LIMIT $3) b",
                xid,
                seq,
                limit,
            )
        )


def _records(
    rows: Sequence[asyncpg.Record], acks: Sequence[Ack], *, page: bool = False
) -> list[list[object]]:
    """Send records of ``rows`` (in the order sent) with their ``acks``: one per topic,
    partition (and, with ``page``, kept record) as parallel arrays in the order of
    ``_RECORD_ARRAYS``, the rows' seqs flat with 1-based [start:end] slices per record;
    with ``page``, the kept record each one updates (None: a new record)."""
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, (r, (topic, partition, _)) in enumerate(zip(rows, acks, strict=True)):
        group: tuple[object, ...] = (r["page"], topic, partition) if page else (topic, partition)
        groups.setdefault(group, []).append(i)
    cols: list[list[object]] = [[] for _ in range(12)]
    (t, p, f, last, lx, ls, hx, hs, seqs, s, e, ids) = cols
    updated: set[object] = set()
    for key, members in groups.items():
        first_row, last_row = rows[members[0]], rows[members[-1]]
        offsets = [acks[i][2] for i in members]
        t.append(acks[members[0]][0])
        p.append(acks[members[0]][1])
        f.append(min(offsets))
        last.append(max(offsets))
        lx.append(first_row["xid"])
        ls.append(first_row["id"])
        hx.append(last_row["xid"])
        hs.append(last_row["id"])
        s.append(len(seqs) + 1)
        seqs.extend(rows[i]["id"] for i in members)
        e.append(len(seqs))
        if page:
            ids.append(key[0] if key[0] not in updated else None)
            updated.add(key[0])
    out = [t, p, f, last, lx, ls, hx, hs, seqs, s, e]
    return [*out, ids] if page else out
