"""When the growing segment is sealed: once writes pause, or when it is overdue.

A bulk load written in many batches should build one ANN segment, not one per batch:
the seal waits until writes have paused for a quiet time. Under writes that never
pause, it seals anyway once the growing segment holds twice the seal size, since its
exact scan costs every query. Time comes from a :class:`Clock`, real by default, so
tests drive sealing with a fake clock instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = [
    "SEAL_OVERDUE",
    "SEAL_QUIET_SECONDS",
    "Clock",
    "SealingPolicy",
    "SystemClock",
    "TimerHandle",
]

# Writes must pause this long before the growing segment is sealed in the background.
SEAL_QUIET_SECONDS = 1.0
# Under writes that never pause, seal anyway once the growing segment holds this many
# times the seal size (its exact scan costs every query).
SEAL_OVERDUE = 2


class TimerHandle(Protocol):
    """A callback scheduled by a :class:`Clock`."""

    def cancel(self) -> None:
        """Stop the callback from running, if it has not started."""
        ...


class Clock(Protocol):
    """Monotonic time and delayed callbacks."""

    def now(self) -> float:
        """Seconds on a monotonic clock."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` (on another thread) ``delay`` seconds from now."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic`` and daemon ``threading.Timer`` threads."""

    def now(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """A started daemon timer thread."""
        timer = threading.Timer(delay, callback)
        timer.daemon = True
        timer.start()
        return timer


class SealingPolicy:
    """Calls ``seal`` (under ``lock``) once writes pause for ``quiet_seconds``, or
    when ``overdue()`` says the growing segment is too big to wait.

    Args:
        lock: The index's lock: the callback takes it before it looks or seals.
        seal: Starts a seal if one is due (called under ``lock``).
        overdue: Whether the growing segment is overdue (called under ``lock``).
        clock: Where time comes from (tests pass a fake one).
        quiet_seconds: How long writes must pause.
    """

    def __init__(
        self,
        *,
        lock: threading.RLock,
        seal: Callable[[], None],
        overdue: Callable[[], bool],
        clock: Clock | None = None,
        quiet_seconds: float = SEAL_QUIET_SECONDS,
    ) -> None:
        self.lock = lock
        self.clock: Clock = clock or SystemClock()
        self.quiet_seconds = quiet_seconds
        self._seal = seal
        self._overdue = overdue
        self._timer: TimerHandle | None = None
        self._last_write = 0.0
        self._stopped = False

    def wrote(self) -> None:
        """A write left the growing segment at or past the seal size, or left segments
        to merge once writes pause (under the lock)."""
        self._last_write = self.clock.now()
        if self._timer is None and not self._stopped:
            self._arm(self.quiet_seconds)

    def retry(self) -> None:
        """A due seal could not start now (another process is building): check again
        after the quiet time (under the lock)."""
        if self._timer is None and not self._stopped:
            self._arm(self.quiet_seconds)

    def cancel(self) -> None:
        """Drop a pending check (optimize() seals everything itself)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def stop(self) -> None:
        """No more checks (the index is closing)."""
        self._stopped = True
        self.cancel()

    def quiet(self) -> bool:
        """Whether no write was noted for ``quiet_seconds``."""
        return self.clock.now() - self._last_write >= self.quiet_seconds

    @property
    def pending(self) -> bool:
        """Whether a check is scheduled."""
        return self._timer is not None

    def _arm(self, delay: float) -> None:
        if self._timer is not None:  # one pending check at a time: a second timer
            self._timer.cancel()  # would arm two more, and so on (threads by hundreds)
        self._timer = self.clock.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        with self.lock:
            self._timer = None
            if self._stopped:
                return
            remaining = self._last_write + self.quiet_seconds - self.clock.now()
            if remaining > 0 and not self._overdue():
                self._arm(remaining)
            else:  # quiet, or writes never pause and the exact scan keeps growing
                self._seal()  # may have armed a retry itself
                if remaining > 0 and self._timer is None:
                    self._arm(remaining)
