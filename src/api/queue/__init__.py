"""Queue mode (INGEST_QUEUE=nats|redis): the API publishes validated rows to a broker and
answers once the broker has durably stored them; workers (`python -m src.worker`) drain the
broker into the group-commit writer and acknowledge only what is committed.

The whole protocol lives here, one concern per module:
- messages.py  — what a message is: one event row, its subject, its deduplication id;
- broker.py    — the interface both brokers implement, and the status / dead-letter shapes;
- jetstream.py — NATS JetStream: a work-queue stream, a durable pull consumer, a DLQ stream;
- streams.py   — Redis Streams: a stream, a consumer group, a DLQ stream;
- consumer.py  — the worker loop: fetch, commit, ack, retry with backoff, dead-letter;
- publisher.py — the API side: publish a request's rows, 503 when the broker is away;
- router.py    — GET /queue/status, GET /queue/dlq, POST /queue/dlq/replay.
docs/queue.md describes the design; README "Queue mode and scale-out" its use.
"""
