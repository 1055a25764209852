"""Alembic's environment. It runs only through src/api/db/migrate.py, which hands it a
connection to the database named by the settings (and, at startup, holds the advisory lock);
there is no alembic.ini and no offline (SQL script) mode, since revisions ask the database
which TimescaleDB edition it runs."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection
from sqlmodel import SQLModel

from src.api.db.migrate import include_object

connection = context.config.attributes.get("connection")
if context.is_offline_mode() or not isinstance(connection, Connection):
    raise RuntimeError(
        "run migrations with `python -m src.cli db upgrade` (or start the service), not the alembic tool"
    )

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    include_object=include_object(connection),
    compare_type=True,
    # One transaction per revision, so a revision that must run a statement outside any
    # transaction (continuous-aggregate DDL) can use `op.get_context().autocommit_block()`.
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
