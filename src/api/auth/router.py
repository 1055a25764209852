"""/api/keys: create (the key is in the answer, once), list (prefixes, never secrets), revoke."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request

from src.api.auth import repository
from src.api.auth.dependencies import AdminKeyDep
from src.api.auth.schemas import KeyCreate, KeyCreated, KeyPublic
from src.api.auth.service import KeyService
from src.api.db.engine import SessionDep
from src.api.errors import Forbidden, NotFound

router = APIRouter(prefix="/api/keys", tags=["keys"])


def _service(request: Request) -> KeyService:
    service: KeyService = request.app.state.keys
    return service


def _public(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in KeyPublic.model_fields}


@router.post("", response_model=KeyCreated, status_code=201)
async def create_key(
    body: KeyCreate, session: SessionDep, access: AdminKeyDep, request: Request
) -> KeyCreated:
    if access.sites is not None and (body.sites is None or not set(body.sites) <= access.sites):
        raise Forbidden("an admin key limited to some sites can only create keys for those sites")
    key, row = await _service(request).create(session, body.name, body.scopes, body.sites, body.hourly_limit)
    return KeyCreated(key=key, **_public(row))


@router.get("", response_model=list[KeyPublic])
async def list_keys(session: SessionDep, access: AdminKeyDep) -> list[KeyPublic]:
    return [KeyPublic(**_public(row)) for row in await repository.list_keys(session)]


@router.delete("/{key_id}", response_model=KeyPublic)
async def revoke_key(
    key_id: uuid.UUID, session: SessionDep, access: AdminKeyDep, request: Request
) -> KeyPublic:
    row = await _service(request).revoke(session, key_id)
    if row is None:
        raise NotFound(f"API key {key_id} not found")
    return KeyPublic(**_public(row))
