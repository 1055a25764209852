"""Ingestion: turning any accepted request shape into event rows and committing them in groups."""
