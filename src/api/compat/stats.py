"""/stats routes of the replaced systems (filled in by the aggregation work)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["compat"])
