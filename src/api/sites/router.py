"""/api/sites: the registry, behind an admin key. Deleting a site disables it: its events stay."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request

from src.api.auth.dependencies import AdminKeyDep
from src.api.config import get_settings
from src.api.db.engine import SessionDep
from src.api.errors import AppError, NotFound
from src.api.sites import repository
from src.api.sites.schemas import SiteCreate, SitePublic, SiteUpdate
from src.api.sites.service import SiteRegistry, own_hostnames

router = APIRouter(prefix="/api/sites", tags=["sites"])


class SiteExists(AppError):
    status_code = 409


def _changed(request: Request) -> None:
    registry: SiteRegistry = request.app.state.site_registry
    registry.invalidate()


def _public(record: repository.SiteRecord) -> SitePublic:
    return SitePublic.model_validate(record.public())


@router.post("", response_model=SitePublic, status_code=201)
async def create_site(
    body: SiteCreate, session: SessionDep, access: AdminKeyDep, request: Request
) -> SitePublic:
    access.check_site(body.site_id)
    values: dict[str, Any] = {
        "site_id": body.site_id,
        "client_id": body.client_id,
        "allowed_hostnames": list(own_hostnames(body.site_id, body.allowed_hostnames or ())),
        "privacy_level": body.privacy_level or get_settings().default_privacy_level,
        "timezone": body.timezone,
    }
    record = await repository.create_site(session, values)
    if record is None:
        raise SiteExists(f"site {body.site_id!r} exists; PATCH /api/sites/{body.site_id} changes it")
    _changed(request)
    return _public(record)


@router.get("", response_model=list[SitePublic])
async def list_sites(session: SessionDep, access: AdminKeyDep) -> list[SitePublic]:
    return [
        _public(r)
        for r in await repository.all_sites(session)
        if access.sites is None or r.site_id in access.sites
    ]


async def _site(session: SessionDep, access: AdminKeyDep, site_id: str) -> repository.SiteRecord:
    access.check_site(site_id)
    record = await repository.get_site(session, site_id.lower())
    if record is None:
        raise NotFound(f"site {site_id!r} is not registered")
    return record


@router.get("/{site_id}", response_model=SitePublic)
async def read_site(site_id: str, session: SessionDep, access: AdminKeyDep) -> SitePublic:
    return _public(await _site(session, access, site_id))


@router.patch("/{site_id}", response_model=SitePublic)
async def update_site(
    site_id: str, body: SiteUpdate, session: SessionDep, access: AdminKeyDep, request: Request
) -> SitePublic:
    record = await _site(session, access, site_id)
    values: dict[str, Any] = body.model_dump(exclude_unset=True, exclude={"enabled"})
    if "allowed_hostnames" in values:
        values["allowed_hostnames"] = list(own_hostnames(record.site_id, values["allowed_hostnames"] or ()))
    if body.enabled is not None:
        values["disabled_at"] = None if body.enabled else (record.disabled_at or datetime.now(UTC))
    updated = await repository.update_site(session, record.site_id, values) if values else record
    assert updated is not None
    _changed(request)
    return _public(updated)


@router.delete("/{site_id}", response_model=SitePublic)
async def delete_site(site_id: str, session: SessionDep, access: AdminKeyDep, request: Request) -> SitePublic:
    """Disables the site: its events are refused from now on; those stored stay."""
    record = await _site(session, access, site_id)
    disabled = await repository.disable_site(session, record.site_id)
    assert disabled is not None
    _changed(request)
    return _public(disabled)
