"""Create the project's Kafka topics (compose's one-shot `topics` job).

    python deploy/create_topics.py [--bootstrap kafka:9092] [--timeout 120]

Idempotent: topics that exist are left alone (shared.kafka.ensure_topics). It retries
until the broker answers or the timeout passes, so that it can start beside Kafka."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project root

from shared.kafka import ensure_topics
from shared.topics import ALL_TOPICS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="create_topics")
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            asyncio.run(ensure_topics(args.bootstrap))
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                print(
                    f"create_topics: broker {args.bootstrap} not usable: {exc!r}", file=sys.stderr
                )
                return 1
            print(f"create_topics: waiting for {args.bootstrap} ({exc!r})", flush=True)
            time.sleep(2)
    for t in ALL_TOPICS:
        print(f"topic {t.name}: {t.partitions} partition(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
