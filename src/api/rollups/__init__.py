"""The rollups: every pre-aggregated relation the stats planner reads instead of raw events,
and the protocol that keeps each one exact. Read in this order:

- `catalogue.py`: what exists — the 15-minute rollups, the hourly (:00, :15, :30) and daily
  tiers of narrow shapes, one `CATALOGUE`, and the granule arithmetic (`floor_to`, bucket SQL).
- `models.py`, `schema.py`: their tables (Apache) or continuous aggregates (Community), the
  tiers' watermarks, the policies; called by the migrations.
- `maintenance.py`: the SQL the ingest writer and deletes run on Apache, in the statement that
  changes events, and why every event then counts exactly once.
- `job.py`: the Apache job that fills closed spans of the tiers and moves their watermarks.
- `freshness.py`: what the planner asks — how far each rollup is usable, whatever the edition.
- `repository.py`: the SQL of the last two.

Nothing here imports the HTTP layer; the ingest writer, event deletes, the migrations and the
stats planner import from here.
"""
