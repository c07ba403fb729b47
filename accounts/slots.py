"""`Slots`: how many threads of this process may wait on the backend for one kind of work.

A sign-in holds its thread for as long as the backend takes; so does a
request waiting for a refresh. A backend that is slow for everyone would
let such requests take every thread, and pages that need no backend would
queue behind them. Over the limit, a request waits for a slot only while a
holder is younger than `wait` seconds (a healthy backend answers sooner, so
a burst queues briefly); when every holder has been waiting longer, it is
refused at once with `BackendUnavailable`: a 503 for what needs the
backend, while every other page still finds a thread.
"""

import contextlib
import itertools
import threading
import time

from .exceptions import BackendUnavailable


class Slots:
    """Up to `limit` holders at once; one over it waits only while a holder is young."""

    def __init__(self, what: str, setting: str, wait: float = 1.0):
        self.what = what
        self.setting = setting
        self.wait = wait
        self._changed = threading.Condition()
        self._started: dict[int, float] = {}  # holder -> time.monotonic() it took its slot
        self._numbers = itertools.count()

    @contextlib.contextmanager
    def hold(self, *, limit: int):
        """Hold one slot while the block runs.

        :raises BackendUnavailable: `limit` holders are waiting on the
            backend, each for longer than `wait`.
        """
        with self._changed:
            while len(self._started) >= limit:
                remaining = max(self._started.values()) + self.wait - time.monotonic()
                if remaining <= 0:
                    raise BackendUnavailable(
                        f"{len(self._started)} {self.what} of this process are waiting on the "
                        f"backend, each for over {self.wait:g} s ({self.setting}={limit})"
                    )
                self._changed.wait(remaining)
            number = next(self._numbers)
            self._started[number] = time.monotonic()
        try:
            yield
        finally:
            with self._changed:
                del self._started[number]
                self._changed.notify()
