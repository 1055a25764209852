"""Typed dependencies of the stats routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from src.api.db.timescale import TimescaleInfo


async def get_timescale(request: Request) -> TimescaleInfo:
    info: TimescaleInfo = request.app.state.timescale
    return info


TimescaleDep = Annotated[TimescaleInfo, Depends(get_timescale)]
