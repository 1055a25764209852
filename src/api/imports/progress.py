"""What `python -m src.cli import` shows: a progress line on stderr while it runs, and the
summary (its result, for people and scripts) on stdout at the end."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from src.api.imports.service import ImportReport

_BAR_WIDTH = 24


class ProgressLine:
    """On a terminal, one line rewritten in place a few times a second, with a bar of the file's
    bytes read; elsewhere (a log, a CI job) a plain line every few seconds. `every`: the seconds
    between two lines (default 0.2 on a terminal, 5 elsewhere)."""

    def __init__(
        self,
        stream: TextIO,
        fraction_read: Callable[[], float | None] = lambda: None,
        *,
        every: float | None = None,
    ) -> None:
        self._stream = stream
        self._fraction = fraction_read
        self._tty = stream.isatty()
        self._every = every if every is not None else 0.2 if self._tty else 5.0
        self._last = time.monotonic()
        self._shown = False
        self._latest: ImportReport | None = None

    def __call__(self, report: ImportReport) -> None:
        self._latest = report
        now = time.monotonic()
        if now - self._last < self._every:
            return
        self._last = now
        self._show(report)

    def _show(self, report: ImportReport) -> None:
        counts = report.counts
        text = (
            f"read {counts.read}, accepted {counts.accepted}, duplicates {counts.duplicates},"
            f" rejected {counts.rejected}, {report.rate:,.0f} events/s"
        )
        fraction = self._fraction()
        if self._tty:
            if fraction is not None:
                filled = round(fraction * _BAR_WIDTH)
                text = f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {fraction:4.0%} {text}"
            self._stream.write(f"\r\x1b[2K{text}")
            self._shown = True
        else:
            if fraction is not None:
                text = f"{fraction:.0%} of the file: {text}"
            self._stream.write(text + "\n")
        self._stream.flush()

    def finish(self) -> None:
        """On a terminal, the final state, then a new line for what follows."""
        if self._tty and self._shown and self._latest is not None:
            self._show(self._latest)
            self._shown = False
            self._stream.write("\n")
            self._stream.flush()


def summary_lines(report: ImportReport) -> list[str]:
    """`accepted N, duplicates N, rejected N (S s, R events/s)`, then the first rejects by line."""
    counts = report.counts
    lines = [
        f"accepted {counts.accepted}, duplicates {counts.duplicates}, rejected {counts.rejected}"
        f" ({report.seconds:.2f} s, {report.rate:.0f} events/s)"
    ]
    lines += [str(reject) for reject in report.first_rejects]
    if counts.rejected > len(report.first_rejects):
        lines.append(f"… and {counts.rejected - len(report.first_rejects)} more rejected")
    if any("EVENTS_RETENTION" in str(reject) for reject in report.first_rejects):
        lines.append(
            "events older than EVENTS_RETENTION are refused: to import history, set it longer"
            " (say EVENTS_RETENTION='5 years') or to 'off', for the import and for the service"
        )
    return lines
