"""A progress line: count, rate and ETA, for long loops (prepare, training, evaluation).

On a terminal the line is redrawn in place; otherwise (logs, pipes) a line is
written every ``every_s`` seconds and at the end.
"""

import sys
import time


def format_duration(seconds):
  """3725 -> '1:02:05', 65 -> '1:05'."""
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
  """Counts steps towards ``total`` (None: unknown) and reports steps/s and ETA."""

  def __init__(self, total=None, name="", unit="it", every_s=None, stream=None, clock=time.monotonic):
    self.total = total
    self.name = name
    self.unit = unit
    self.stream = stream or sys.stderr
    self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
    self.every_s = every_s if every_s is not None else (0.2 if self.interactive else 30.0)
    self.count = 0
    self._clock = clock
    self._start = clock()
    self._last_report = self._start  # first line after every_s: early rates mislead

  @property
  def elapsed_s(self):
    return self._clock() - self._start

  @property
  def rate(self):
    """Steps per second since the start."""
    return self.count / max(self.elapsed_s, 1e-9)

  @property
  def eta_s(self):
    """Seconds left at the average rate; None when the total or the rate is unknown."""
    if self.total is None or self.count == 0:
      return None
    return max(self.total - self.count, 0) / self.rate

  def line(self):
    done = f"{self.count}/{self.total}" if self.total is not None else f"{self.count}"
    parts = [f"{self.name}: {done} {self.unit}" if self.name else f"{done} {self.unit}",
             f"{self.rate:.1f} {self.unit}/s", f"elapsed {format_duration(self.elapsed_s)}"]
    if self.eta_s is not None and self.count < self.total:
      parts.append(f"ETA {format_duration(self.eta_s)}")
    return ", ".join(parts)

  def update(self, n=1):
    self.count += n
    now = self._clock()
    if now - self._last_report >= self.every_s:
      self._write()
      self._last_report = now

  def close(self):
    """Writes the final line."""
    self._write()
    if self.interactive:
      self.stream.write("\n")
    self.stream.flush()

  def _write(self):
    if self.interactive:
      self.stream.write("\r" + self.line() + "\033[K")
    else:
      self.stream.write(self.line() + "\n")
    self.stream.flush()
