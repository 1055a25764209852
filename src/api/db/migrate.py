"""Versioned schema changes: the Alembic environment in src/api/db/migrations/, configured here
in code (no alembic.ini), and the operations startup and `python -m src.cli db` need.

Every function takes a sync `Connection`: Alembic is synchronous, so async callers hand it one
with `AsyncConnection.run_sync`. Upgrading is not locked here; `setup_database`
(src/api/db/timescale.py) holds the advisory lock around it and is the one caller that upgrades.
The lock matters within one process too: Alembic's `op` and `context` are module-level proxies,
so two upgrades interleaved on one event loop would run each other's operations.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, text
from sqlalchemy.schema import SchemaItem
from sqlmodel import SQLModel

import src.api.auth.models
import src.api.events.models
import src.api.exports.models
import src.api.privacy.models
import src.api.rollups.models
import src.api.sessions.models
import src.api.sites.models  # noqa: F401
from src.api.config import Settings
from src.api.rollups.catalogue import CATALOGUE
from src.api.rollups.models import RollupWatermark

SCRIPT_LOCATION = Path(__file__).with_name("migrations")
VERSIONS = SCRIPT_LOCATION / "versions"
# Revision ids are numbers, zero-padded, in order: 0001_baseline.py, 0002_…; the next is one more
# than the highest (two branches that both add the same number: the later to merge renumbers).
_REVISION_ID = re.compile(r"\d{4}")


def config(connection: Connection | None = None, settings: Settings | None = None) -> Config:
    """Alembic's configuration. env.py migrates over `connection`; revisions read `settings`."""
    # Alembic's own messages ("Generating …") go to stderr: stdout carries the CLI's answers.
    alembic_config = Config(stdout=sys.stderr, attributes={"connection": connection, "settings": settings})
    alembic_config.set_main_option("script_location", str(SCRIPT_LOCATION))
    alembic_config.set_main_option("path_separator", "os")
    # ConfigParser interpolates `%`: `%%` is one.
    alembic_config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    return alembic_config


def settings() -> Settings:
    """Inside a revision: the service's settings (say, the chunk interval of a new hypertable)."""
    value = context.config.attributes.get("settings")
    if not isinstance(value, Settings):
        raise RuntimeError("migrations run through src.api.db.migrate, which passes the settings")
    return value


def upgrade(connection: Connection, settings: Settings) -> str | None:
    """Apply every revision the database lacks, each in a transaction of its own; return the
    revision it is at now. A database made before migrations existed has no version table: the
    baseline runs over it (see versions/0001_baseline.py) and leaves its rows as they were."""
    command.upgrade(config(connection, settings), "head")
    return current_revision(connection)


def current_revision(connection: Connection) -> str | None:
    """The database's revision; None before the first upgrade."""
    return MigrationContext.configure(connection).get_current_revision()


def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def head_revision() -> str:
    head = scripts().get_current_head()
    if head is None:
        raise RuntimeError(f"no revisions in {VERSIONS}")
    return head


@dataclass(frozen=True)
class Revision:
    revision: str
    down_revision: str | None
    message: str
    path: Path


def history() -> list[Revision]:
    """Every revision, oldest first."""
    found = [
        Revision(
            revision=script.revision,
            down_revision=script.down_revision if isinstance(script.down_revision, str) else None,
            message=script.doc,
            path=Path(script.path),
        )
        for script in scripts().walk_revisions()
    ]
    return found[::-1]


def next_revision_id() -> str:
    numbers = [int(r.revision) for r in history() if _REVISION_ID.fullmatch(r.revision)]
    return f"{max(numbers, default=0) + 1:04d}"


def new_revision(message: str, connection: Connection | None = None) -> Path:
    """Write the next revision file. With a connection (to a database at head) Alembic fills it
    in from the differences between the database and the models, to be read and corrected."""
    alembic_config = config(connection)
    script = command.revision(
        alembic_config, message=message, autogenerate=connection is not None, rev_id=next_revision_id()
    )
    if script is None or isinstance(script, list):
        raise RuntimeError("alembic wrote no single revision")
    return Path(script.path)


APACHE_ONLY_TABLES = frozenset((*CATALOGUE.names, RollupWatermark.__tablename__, CATALOGUE.late.name))
IncludeObject = Callable[[SchemaItem, str | None, str, bool, SchemaItem | None], bool]


def include_object(connection: Connection) -> IncludeObject:
    """What comparing the database with the models must ignore: what TimescaleDB makes by itself
    (a hypertable's default index on its time column) and, on Community, the rollup tables of
    the models, which are continuous aggregates (views) there, and the Apache rollup job's
    watermarks, which Community does not need.

    The edition is asked on first use, not now: env.py builds this filter before Alembic takes
    the connection, and a query then would open a transaction that Alembic takes for the
    caller's, leaving the migrations uncommitted."""
    editions: list[bool] = []

    def community() -> bool:
        if not editions:
            license_ = connection.execute(text("SHOW timescaledb.license")).scalar_one()
            editions.append(license_ == "timescale")
        return editions[0]

    def include(obj: SchemaItem, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if type_ == "table" and name in APACHE_ONLY_TABLES and community():
            return False
        return not (type_ == "index" and reflected and compare_to is None and name == "event_time_idx")

    return include


def schema_differences(connection: Connection, metadata: MetaData = SQLModel.metadata) -> Sequence[Any]:
    """How the database differs from the models (Alembic's autogenerate diff); empty when the
    revisions create exactly what the models describe."""
    migration_context = MigrationContext.configure(
        connection, opts={"include_object": include_object(connection), "compare_type": True}
    )
    differences: list[Any] = compare_metadata(migration_context, metadata)
    return differences
