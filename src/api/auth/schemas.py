"""The /api/keys bodies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from src.api.auth.keys import Scope

NO_NUL = r"^[^\x00]*$"
SiteName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=NO_NUL)]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=NO_NUL)]
    scopes: Annotated[list[Scope], Field(min_length=1)]
    sites: Annotated[list[SiteName], Field(max_length=1000)] | None = None  # None: every site
    hourly_limit: Annotated[int, Field(ge=0, le=100_000_000)] = 600  # 0: no limit


class KeyPublic(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    sites: list[str] | None
    hourly_limit: int
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyPublic):
    key: str  # shown once: only its hash is stored
