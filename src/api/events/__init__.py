"""The event: table, schemas, enrichment, repository and the original /api/events routes."""
