"""The export pipeline's tables: the watermark of the raw export, its runs, the files each run
stored, and the processed files made from them (migration 0007)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    func,
)
from sqlmodel import Field, SQLModel


class ExportWatermark(SQLModel, table=True):
    """Where the raw export stands: every event received before `exported_until` and visible
    in `snapshot` is in a stored file. `open_since` is the start of the oldest transaction that
    was open when the snapshot was taken: its events, and those of later transactions, carry a
    received_at of at least `open_since - EXPORT_LATE_WINDOW`."""

    __tablename__ = "export_watermark"

    kind: str = Field(sa_column=Column(String(16), primary_key=True))
    exported_until: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    snapshot: str = Field(sa_column=Column(Text, nullable=False))
    open_since: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )


class ExportRun(SQLModel, table=True):
    """One export run: its range and snapshots are fixed when it is made, so a retry exports the
    same events into the same file names."""

    __tablename__ = "export_run"
    __table_args__ = (Index("ix_export_run_kind_status", "kind", "status"),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    kind: str = Field(sa_column=Column(String(16), nullable=False))  # raw | backfill
    status: str = Field(sa_column=Column(String(16), nullable=False))  # running | done | failed
    created_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    # Events received in [range_start, range_end) visible in `snapshot`, less those received
    # before range_start that `previous_snapshot` saw; late ones are looked for from late_from.
    range_start: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    range_end: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    late_from: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    snapshot: str | None = Field(default=None, sa_column=Column(Text))
    previous_snapshot: str | None = Field(default=None, sa_column=Column(Text))
    open_since: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    stamp: str = Field(sa_column=Column(String(32), nullable=False))  # in file names
    prefix: str = Field(sa_column=Column(Text, nullable=False))  # under the raw destination
    format: str = Field(sa_column=Column(String(16), nullable=False))
    events: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    files: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    error: str | None = Field(default=None, sa_column=Column(Text))


class ExportFile(SQLModel, table=True):
    """A file a run stored (or began to store: the row is written before the upload, so a retry
    that writes fewer parts knows which leftovers to delete). Processing marks it done."""

    __tablename__ = "export_file"
    __table_args__ = (Index("ix_export_file_unprocessed", "run_id", postgresql_where="processed_at IS NULL"),)

    run_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("export_run.id", ondelete="CASCADE"), primary_key=True)
    )
    part: int = Field(sa_column=Column(Integer, primary_key=True))
    key: str = Field(sa_column=Column(Text, nullable=False))
    rows: int = Field(sa_column=Column(BigInteger, nullable=False))
    bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
    stored_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
    processed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    process_error: str | None = Field(default=None, sa_column=Column(Text))


class ProcessedFile(SQLModel, table=True):
    """A per-client file made from one raw file."""

    __tablename__ = "processed_file"
    # Deleting a raw file's row deletes the rows of what was made of it.
    __table_args__ = (
        ForeignKeyConstraint(
            ["run_id", "part"], ["export_file.run_id", "export_file.part"], ondelete="CASCADE"
        ),
    )

    run_id: int = Field(sa_column=Column(BigInteger, primary_key=True))
    part: int = Field(sa_column=Column(Integer, primary_key=True))
    client: str = Field(sa_column=Column(String(160), primary_key=True))  # client_<id> | unassigned
    key: str = Field(sa_column=Column(Text, nullable=False))
    rows: int = Field(sa_column=Column(BigInteger, nullable=False))
    stored_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
