"""Database access: the engine, the session dependency (the one commit point), the versioned
schema migrations (migrate.py, migrations/) and the TimescaleDB setup and DDL they use."""
