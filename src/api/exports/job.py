"""The scheduled export: every EXPORT_INTERVAL seconds a raw export run, then processing of the
raw files it stored. Each worker runs the loop; the advisory lock lets one work at a time and
the others skip that turn. Each turn that works is counted in /metrics as job `export` (runs,
failures, last success) and sets its lag: the age of the oldest event not yet exported."""

from __future__ import annotations

import asyncio
import logging

from src.api.errors import AppError
from src.api.exports.service import ExportBusy, Exporter
from src.api.exports.status import export_status
from src.api.metrics import instruments as metrics

log = logging.getLogger(__name__)


async def _turn(exporter: Exporter) -> None:
    try:
        await exporter.run()
        await exporter.process()
    except ExportBusy:
        pass  # another worker (or a POST /export/run) has the turn


async def export_once(exporter: Exporter) -> None:
    try:
        with metrics.job_run("export"):
            await _turn(exporter)
        status = await export_status(exporter.engine, exporter.settings)
        metrics.set_job_lag("export", status.lag_seconds)
    except AppError as exc:  # failed runs are recorded and retried next turn
        log.warning("scheduled export failed: %s", exc.message)
    except Exception as exc:  # the database or a destination away: try again next turn
        log.warning("scheduled export failed: %s", type(exc).__name__)


async def run_export_loop(exporter: Exporter, every: float) -> None:
    while True:
        await export_once(exporter)
        await asyncio.sleep(every)
