"""The service's command line: `python -m src.cli GROUP COMMAND …`.

    db upgrade                 wait for the database, take the startup lock, upgrade to head
    db current                 the database's revision
    db history                 every revision, oldest first
    db revision -m MESSAGE     write the next revision file (--autogenerate: from the models)
    db check                   exit 1 if the database at head differs from the models
    import FILE                store the events of a CSV or NDJSON file (optionally gzipped)
    keys create --name N --scopes S[,S] [--sites A,B] [--hourly-limit N]
                               make an API key; prints it once (only its hash is stored)
    keys list                  every key: id, prefix, name, scopes, sites, limit, last use
    keys revoke ID             revoke a key (by id, or by its prefix when that is unique)

Each group adds its own subparsers (see `_add_db_commands`, `_add_import_command`). The
commands' output is their result, on stdout; progress and log lines (Alembic's "Running
upgrade …") go to stderr. Exit status: 0 done, 1 the database failed, 2 bad arguments or a file
that cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from alembic.util import CommandError
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from src.api.auth import repository as key_repository
from src.api.auth.keys import SCOPES, Scope
from src.api.auth.service import KeyService
from src.api.config import get_settings
from src.api.db import migrate
from src.api.db.engine import create_engine
from src.api.db.timescale import setup_database, wait_for_database
from src.api.errors import AppError, UnreadableFile
from src.api.imports.progress import ProgressLine, summary_lines
from src.api.imports.reader import FORMATS, EventFile
from src.api.imports.service import ImportOptions, import_file
from src.api.ingest.service import tune_garbage_collector

Handler = Callable[[argparse.Namespace], int]
T = TypeVar("T")
log = logging.getLogger(__name__)


def _out(line: str) -> None:
    # The command's answer, for people and scripts; not a log line.
    sys.stdout.write(line + "\n")


async def _upgrade() -> str | None:
    settings = get_settings()
    engine = create_engine(settings)
    try:
        # The very steps of a worker's start (lock, migrations, settings): one way to migrate.
        await setup_database(engine, settings)
        async with engine.connect() as conn:
            return await conn.run_sync(migrate.current_revision)
    finally:
        await engine.dispose()


async def _with_connection(work: Callable[[Connection], T]) -> T:
    settings = get_settings()
    engine = create_engine(settings)
    try:
        await wait_for_database(engine, settings.db_startup_timeout)
        async with engine.connect() as conn:
            result = await conn.run_sync(work)
            await conn.commit()
            return result
    finally:
        await engine.dispose()


def _db_upgrade(args: argparse.Namespace) -> int:
    revision = asyncio.run(_upgrade())
    _out(f"{revision} (head)" if revision == migrate.head_revision() else str(revision))
    return 0


def _db_current(args: argparse.Namespace) -> int:
    revision = asyncio.run(_with_connection(migrate.current_revision))
    head = migrate.head_revision()
    if revision is None:
        _out(f"none (head is {head}; run `db upgrade`)")
    else:
        _out(f"{revision} (head)" if revision == head else f"{revision} (head is {head})")
    return 0


def _db_history(args: argparse.Namespace) -> int:
    head = migrate.head_revision()
    for entry in migrate.history():
        _out(f"{entry.revision} {entry.message}" + (" (head)" if entry.revision == head else ""))
    return 0


def _db_revision(args: argparse.Namespace) -> int:
    message: str = args.message
    if args.autogenerate:
        path = asyncio.run(_with_connection(lambda conn: migrate.new_revision(message, conn)))
    else:
        path = migrate.new_revision(message)
    _out(str(path))
    return 0


def _db_check(args: argparse.Namespace) -> int:
    differences = asyncio.run(_with_connection(migrate.schema_differences))
    for difference in differences:
        _out(repr(difference))
    if differences:
        _out("the models differ from the database: add a revision (`db revision --autogenerate`)")
        return 1
    _out("the models match the database")
    return 0


def _add_db_commands(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = groups.add_parser("db", help="the database schema: versioned migrations (Alembic)")
    commands = db.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, summary: str, handler: Handler) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=summary)
        command.set_defaults(handler=handler)
        return command

    add("upgrade", "wait for the database, take the startup lock, apply every pending revision", _db_upgrade)
    add("current", "print the database's revision", _db_current)
    add("history", "list the revisions, oldest first", _db_history)
    revision = add("revision", "write the next revision file", _db_revision)
    revision.add_argument("-m", "--message", required=True, help="what the revision changes")
    revision.add_argument(
        "--autogenerate",
        action="store_true",
        help="fill it in from the differences between the models and the database (at head)",
    )
    add("check", "exit 1 if the database at head differs from the models", _db_check)


def _import(args: argparse.Namespace) -> int:
    settings = get_settings()
    try:
        events = EventFile(args.file, args.format)
    except UnreadableFile as exc:
        sys.stderr.write(f"python -m src.cli import: error: {exc}\n")
        return 2
    options = ImportOptions(site_id=args.site, batch_size=args.batch, in_flight=settings.ingest_writers + 1)
    tune_garbage_collector()
    with events:
        progress = ProgressLine(sys.stderr, lambda: events.fraction_read)
        try:
            report = asyncio.run(import_file(events, settings, options, progress))
        except KeyboardInterrupt:
            # What was handed to the writer is committed before the process ends.
            progress.finish()
            sys.stderr.write("interrupted: run it again to go on (what was stored counts as duplicates)\n")
            return 130
        finally:
            progress.finish()
    for line in summary_lines(report):
        _out(line)
    if report.stopped is not None:
        log.error("import stopped early: %s (re-run it: what it stored counts as duplicates)", report.stopped)
        return 2 if isinstance(report.stopped, UnreadableFile) else 1
    return 0


def _site_id(text: str) -> str:
    if not 0 < len(text) <= 128 or "\x00" in text:
        raise argparse.ArgumentTypeError("must be 1 to 128 characters")
    return text


def _batch_size(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        size = 0
    if not 1 <= size <= 100_000:
        raise argparse.ArgumentTypeError("must be a whole number from 1 to 100000")
    return size


def _add_import_command(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = groups.add_parser(
        "import",
        help="store the events of a CSV or NDJSON file (idempotent: a re-run stores nothing twice)",
        description="Stream a CSV (with a header) or NDJSON file, optionally gzipped, through the"
        " ingest API's validation and writer. Events older than EVENTS_RETENTION are refused:"
        " set it (or 'off') to import history.",
    )
    command.add_argument("file", type=Path, help="the file (.csv, .ndjson or .jsonl, optionally .gz)")
    command.add_argument(
        "--format",
        choices=sorted(set(FORMATS.values())),
        help="the file's format (default: from its name)",
    )
    command.add_argument("--site", type=_site_id, default="default", help="site_id of events that carry none")
    command.add_argument(
        "--batch", type=_batch_size, default=5000, help="events validated and committed at once (5000)"
    )
    command.set_defaults(handler=_import)


async def _with_key_service(work: Callable[[KeyService, AsyncConnection], Awaitable[T]]) -> T:
    settings = get_settings()
    engine = create_engine(settings)
    try:
        await setup_database(engine, settings)  # a fresh database gets its tables first
        async with engine.begin() as conn:
            return await work(KeyService(engine, settings), conn)
    finally:
        await engine.dispose()


def _scopes(text: str) -> list[Scope]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCOPES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"must be one or more of {', '.join(SCOPES)} (comma-separated)")
    return [cast(Scope, name) for name in names]


def _sites(text: str) -> list[str]:
    names = [_site_id(name.strip()) for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("must name at least one site (leave --sites out for every site)")
    return names


def _limit(text: str) -> int:
    if not text.isdigit() or int(text) > 100_000_000:
        raise argparse.ArgumentTypeError("must be a whole number of requests per hour (0: no limit)")
    return int(text)


def _describe(row: Any) -> str:
    sites = ",".join(row.sites) if row.sites is not None else "*"
    state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
    used = f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never"
    return (
        f"{row.id} {row.prefix}… name={row.name} scopes={','.join(row.scopes)} sites={sites}"
        f" hourly_limit={row.hourly_limit} last_used={used} {state}"
    )


def _keys_create(args: argparse.Namespace) -> int:
    async def work(keys: KeyService, conn: AsyncConnection) -> tuple[str, Any]:
        return await keys.create(conn, args.name, args.scopes, args.sites, args.hourly_limit)

    key, row = asyncio.run(_with_key_service(work))
    _out(key)
    sys.stderr.write(f"{_describe(row)}\nthe key is shown only now: store it; the service keeps its hash\n")
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    async def work(keys: KeyService, conn: AsyncConnection) -> Sequence[Any]:
        return await key_repository.list_keys(conn)

    for row in asyncio.run(_with_key_service(work)):
        _out(_describe(row))
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    wanted: str = args.key

    async def work(keys: KeyService, conn: AsyncConnection) -> Any:
        rows = await key_repository.list_keys(conn)
        matches = [r for r in rows if str(r.id) == wanted or r.prefix == wanted.rstrip("…")]
        if len(matches) != 1:
            return len(matches)
        return await keys.revoke(conn, matches[0].id)

    result = asyncio.run(_with_key_service(work))
    if isinstance(result, int):
        sys.stderr.write(f"python -m src.cli keys revoke: error: {result} keys match {wanted!r}\n")
        return 2
    _out(_describe(result))
    return 0


def _add_keys_commands(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = groups.add_parser("keys", help="API keys: create, list, revoke")
    commands = keys.add_subparsers(dest="command", required=True, metavar="COMMAND")
    create = commands.add_parser("create", help="make a key and print it (once)")
    create.add_argument("--name", required=True, help="who or what holds it")
    create.add_argument("--scopes", type=_scopes, required=True, help=f"comma-separated: {', '.join(SCOPES)}")
    create.add_argument(
        "--sites", type=_sites, default=None, help="comma-separated site ids (default: every site)"
    )
    create.add_argument(
        "--hourly-limit", type=_limit, default=600, help="requests per hour (default 600; 0: no limit)"
    )
    create.set_defaults(handler=_keys_create)
    commands.add_parser("list", help="every key, never its secret").set_defaults(handler=_keys_list)
    revoke = commands.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key", help="the key's id, or its prefix")
    revoke.set_defaults(handler=_keys_revoke)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m src.cli", description="event-analytics commands")
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")
    _add_db_commands(groups)
    _add_import_command(groups)
    _add_keys_commands(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=get_settings().log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except (AppError, CommandError) as exc:
        # Expected failures (no database, a revision this version does not know): one line.
        log.error("%s failed: %s", " ".join(sys.argv[1:] if argv is None else argv), exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
