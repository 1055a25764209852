"""The memory that request bodies may hold, in bytes, per worker process.

Every request's body is held here chunk by chunk as it arrives (so a slow sender holds only
what it has sent), at the estimate of the Python objects it will parse into (`parse_cost`);
the body guard (src/api/middleware.py) does the holding. Everything a request took is given
back when its answer has been sent. A request that would take the budget past
`INGEST_MEMORY_BYTES` gets 503 with Retry-After instead, before it reads or parses more; a
request alone may exceed it, so no
valid request is refused forever.

Counting bytes rather than events is what bounds memory for any input: 5 MB of `[[],[],…]`
parses into some 100 MB of lists, and is held as such.
"""

from __future__ import annotations

from src.api.errors import ServiceUnavailable

# Upper bounds, measured with tracemalloc on orjson.loads (tests/ingest/test_body_guard.py): a
# container costs at most ~72 bytes, a further element (a comma) ~64, a key ~40, and the
# text of strings about its own size.
_CONTAINER_BYTES = 80
_ELEMENT_BYTES = 64
_KEY_BYTES = 40


def parse_cost(body: bytes) -> int:
    """At least the bytes of Python objects `orjson.loads(body)` makes; a few C-speed scans."""
    containers = body.count(b"[") + body.count(b"{")
    return (
        len(body)
        + _CONTAINER_BYTES * containers
        + _ELEMENT_BYTES * body.count(b",")
        + _KEY_BYTES * body.count(b":")
    )


class MemoryBudget:
    """Bytes held by requests in progress, against a limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> None:
        if self.held > 0 and self.held + size > self.limit:
            raise ServiceUnavailable("too many large requests in progress; retry shortly", retry_after=1)
        self.held += size

    def give(self, size: int) -> None:
        self.held -= size


class BodyHold:
    """What one request holds of the budget."""

    __slots__ = ("budget", "held")

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.held = 0

    def take(self, size: int) -> None:
        self.budget.take(size)
        self.held += size

    def release(self) -> None:
        self.budget.give(self.held)
        self.held = 0
