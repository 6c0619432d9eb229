"""A one-line progress bar on stderr (no dependency); silent when switched off."""
from __future__ import annotations

import shutil
import sys
import time


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """``[#####-----] 12/36 lstm fwd T=64 B=1 H=128  0:12 elapsed, ~0:25 left``, redrawn in place."""

    def __init__(self, total: int, enabled: bool, stream=None, width: int = 24):
        self.total, self.enabled, self.width = total, enabled and total > 0, width
        self.stream = stream if stream is not None else sys.stderr
        self.started = time.perf_counter()
        self.done = 0

    def show(self, label: str = "") -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.started
        filled = round(self.width * self.done / self.total)
        eta = f", ~{_clock(elapsed / self.done * (self.total - self.done))} left" if self.done else ""
        line = (f"[{'#' * filled}{'-' * (self.width - filled)}] {self.done}/{self.total} {label}"
                f"  {_clock(elapsed)} elapsed{eta}")
        columns = shutil.get_terminal_size((100, 20)).columns
        self.stream.write("\r" + line[:columns - 1].ljust(columns - 1))
        self.stream.flush()

    def advance(self, label: str = "") -> None:
        self.done += 1
        self.show(label)

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
