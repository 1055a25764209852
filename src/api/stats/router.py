"""The canonical /api/stats routes (filled in by the aggregation work)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/stats", tags=["stats"])
