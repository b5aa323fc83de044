"""An independent Kafka reader for the tests (confluent-kafka, not the server's client).

Usage: read_topic.py BROKERS TOPIC COUNT TIMEOUT_SECONDS [distinct]
Reads TOPIC from its beginning under a fresh consumer group until COUNT records arrived (with
`distinct`: COUNT records of distinct event ids, so redelivered duplicates do not count) or
TIMEOUT_SECONDS passed, and prints one JSON object per record:
{"key", "value", "partition", "offset", "headers"}.
"""
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError


def main():
    brokers, topic, count, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    distinct = len(sys.argv) > 5 and sys.argv[5] == "distinct"
    ids = set()
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": f"reader-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + timeout
    try:
        while seen < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() != KafkaError._PARTITION_EOF:
                    print(f"kafka: {message.error()}", file=sys.stderr)
                continue
            headers = {k: (v.decode() if v is not None else None) for k, v in (message.headers() or [])}
            print(json.dumps({
                "key": message.key().decode() if message.key() is not None else None,
                "value": json.loads(message.value()),
                "partition": message.partition(),
                "offset": message.offset(),
                "headers": headers,
            }), flush=True)
            if distinct:
                ids.add(json.loads(message.value()).get("id"))
                seen = len(ids)
            else:
                seen += 1
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
