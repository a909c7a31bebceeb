"""Independent producer for weir's tests: N web-vitals events to a Kafka topic
with the confluent-kafka client (librdkafka under Python, not weir's code).

    produce.py BOOTSTRAP TOPIC N PREFIX

Event i has id PREFIX+i, a timestamp on one of three days and a realistic,
long user agent (about 330 bytes of JSON per event). Prints one JSON line:
{"sent": N, "bytes": B} once every message is acknowledged by the broker.
"""

import json
import sys

from confluent_kafka import Producer

UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0"
)
DAY0_MS = 1_795_478_400_000


def event(prefix: str, i: int) -> bytes:
    ts = DAY0_MS + (i % 3) * 86_400_000 + (i * 7919) % 86_400_000
    return (
        '{"event_id":"%s%d","timestamp":%d,"page_url":"https://Shop.example.com/catalogue/p/%d/?utm_source=newsletter&x=1",'
        '"tti_ms":%d,"ttar_ms":12.5,"session_id":"s-%d-0000-4000-8000-000000000000","user_agent":"%s","country":"de"}'
        % (prefix, i, ts, i % 500, 100 + i % 900, i // 20, UA)
    ).encode()


def main() -> None:
    bootstrap, topic, n, prefix = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    failed = []

    def on_delivery(err, _msg):
        if err is not None:
            failed.append(str(err))

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "enable.idempotence": False,
            "acks": "all",
        }
    )
    sent_bytes = 0
    for i in range(n):
        payload = event(prefix, i)
        sent_bytes += len(payload)
        while True:
            try:
                producer.produce(topic, payload, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    if left or failed:
        sys.exit(f"{left} messages unacknowledged, {len(failed)} failed: {failed[:3]}")
    print(json.dumps({"sent": n, "bytes": sent_bytes}))


if __name__ == "__main__":
    main()
