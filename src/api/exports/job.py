"""The scheduled export: every EXPORT_INTERVAL seconds a raw export run, then processing of the
raw files it stored. Each worker runs the loop; the advisory lock lets one work at a time and
the others skip that turn."""

from __future__ import annotations

import asyncio
import logging

from src.api.errors import AppError
from src.api.exports.service import ExportBusy, Exporter

log = logging.getLogger(__name__)


async def export_once(exporter: Exporter) -> None:
    try:
        await exporter.run()
        await exporter.process()
    except ExportBusy:
        pass  # another worker (or a POST /export/run) has the turn
    except AppError as exc:  # failed runs are recorded and retried next turn
        log.warning("scheduled export failed: %s", exc.message)
    except Exception as exc:  # the database or a destination away: try again next turn
        log.warning("scheduled export failed: %s", type(exc).__name__)


async def run_export_loop(exporter: Exporter, every: float) -> None:
    while True:
        await export_once(exporter)
        await asyncio.sleep(every)
