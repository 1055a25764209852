"""Database access: the engine, the session dependency (the one commit point) and TimescaleDB DDL."""
