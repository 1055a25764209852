"""Compatibility router (filled in by the ingestion work)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["compat"])
