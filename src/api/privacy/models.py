"""The daily salts of visitor hashes: one random salt per UTC day, today's and yesterday's
kept, older ones deleted — once a salt is gone, nobody (the operator included) can link a hash
back to an address by trying every address."""

from __future__ import annotations

from sqlalchemy import Column, Date, LargeBinary, Table
from sqlmodel import SQLModel

PRIVACY_SALT_TABLE = Table(
    "privacy_salt",
    SQLModel.metadata,
    Column("day", Date, primary_key=True),
    Column("salt", LargeBinary, nullable=False),
)
