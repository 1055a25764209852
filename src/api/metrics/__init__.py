"""Prometheus metrics and request logs: the instruments (instruments.py), the per-request
middleware that counts and logs (requests.py) and `GET /metrics` (router.py). See
docs/metrics.md."""
