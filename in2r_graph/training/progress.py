"""Step progress for long loops: a live line on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time

logger = logging.getLogger(__name__)


class Progress:
    """Report ``done / total`` steps with elapsed time, estimated time left and a status text.

    On a terminal it redraws one line on standard error; elsewhere (log files,
    CI) it logs at every quarter of the loop so that output stays short.
    """

    def __init__(self, total: int, label: str, enabled: bool = True) -> None:
        self.total = max(1, total)
        self.label = label
        self.live = enabled and sys.stderr.isatty()
        self.enabled = enabled
        self.start = time.monotonic()
        self.next_log = 0.25

    def update(self, done: int, status: str = "") -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        left = elapsed / done * (self.total - done) if done else 0.0
        text = f"{self.label} {done}/{self.total} [{elapsed:4.0f}s, {left:4.0f}s left] {status}"
        if self.live:
            sys.stderr.write("\r" + text[:150].ljust(150))
            sys.stderr.flush()
        elif done / self.total >= self.next_log:
            logger.info(text)
            while self.next_log <= done / self.total:
                self.next_log += 0.25

    def close(self) -> None:
        if self.live:
            sys.stderr.write("\r" + " " * 150 + "\r")
            sys.stderr.flush()
