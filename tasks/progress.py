"""Progress of long work: a live bar on a terminal, and periodic lines in the Prefect log."""

from __future__ import annotations

import logging
import sys
import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

LOG_EVERY_S = 10.0


class ProgressReporter:
    """Report ``done`` of ``total`` items; quarantined items count as done."""

    def __init__(
        self,
        total: int,
        label: str,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
        *,
        live: bool | None = None,
    ) -> None:
        self.total, self.label, self.logger = total, label, logger
        self.started = self.last_log = time.monotonic()
        self.bar: Progress | None = None
        if live if live is not None else sys.stderr.isatty():
            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:.1f} img/s, {task.fields[bad]} quarantined"),
                TimeRemainingColumn(),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task(label, total=total, rate=0.0, bad=0)

    def update(self, decoded: int, quarantined: int) -> None:
        # A re-run shard (a retried worker, safe mode) reports its items again: never > total.
        done = min(decoded + quarantined, self.total)
        elapsed = time.monotonic() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        if self.bar is not None:
            self.bar.update(self.task, completed=done, rate=rate, bad=quarantined)
        if time.monotonic() - self.last_log >= LOG_EVERY_S:
            self.last_log = time.monotonic()
            eta = max(0.0, (self.total - done) / rate) if rate > 0 else float("nan")
            self.logger.info(
                "%s: %d/%d (%.0f%%), %d quarantined, %.1f img/s, about %.0f s left",
                self.label,
                done,
                self.total,
                100 * done / max(self.total, 1),
                quarantined,
                rate,
                eta,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
