"""`AtMostEvery`: log an ongoing condition once per interval, not once per request.

Used by every message that repeats while something stays wrong: the shared
cache failing over (accounts/cache.py), the database gone (accounts/outage.py),
an X-Forwarded-For nobody trusts (accounts/forwarded.py).
"""

import threading
import time


class AtMostEvery:
    """True from `due()` at most once per `interval` seconds in this process."""

    def __init__(self, interval: float):
        self.interval = interval
        self._last: float | None = None
        self._lock = threading.Lock()

    def due(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if self._last is not None and now - self._last < self.interval:
                return False
            self._last = now
            return True
