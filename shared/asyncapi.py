"""Generate the AsyncAPI document of every topic from the event schemas in code.

``python -m shared.asyncapi docs/asyncapi.json`` (``make asyncapi``) writes it; a test
checks that the committed document matches the code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from shared.events import SCHEMA_VERSION
from shared.topics import ALL_TOPICS


def document() -> dict[str, Any]:
    broker = KafkaBroker("kafka:9092", description="Kafka cluster (Tansu locally)")
    for topic in ALL_TOPICS:
        pub = broker.publisher(
            topic.name,
            title=topic.name,
            description=f"{topic.description} Key: {topic.key}.",
            schema=topic.schema,
        )
        # Declaring the publisher is all AsyncAPI needs; the object is not used to send.
        del pub
    spec = AsyncAPI(
        broker,
        title="ticketflow events",
        version=f"{SCHEMA_VERSION}.0.0",
        description=(
            "Every event is JSON with schema_version, a unique event_id, occurred_at and a"
            " correlation_id that follows the customer message through every service."
        ),
        schema_version="3.0.0",
    )
    data: dict[str, Any] = spec.to_specification().to_jsonable()
    return data


def render() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path("docs/asyncapi.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
