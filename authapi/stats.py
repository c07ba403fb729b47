"""In-process counters the tests and benchmarks read through `GET /_stats`.

The reference API runs as one process, so a locked Counter is the whole truth
about what reached it: how many refreshes, how many reuse detections.
`refresh_calls` (`login_calls`) counts every POST /auth/refresh
(/auth/login) that reached the view, before any delay and whatever its
outcome; `refresh` only the successful ones;
`spent_presented` every spent refresh token presented again, whether or not
reuse detection (AUTHAPI_REUSE_DETECTION) acts on it.
"""

import threading
from collections import Counter

_lock = threading.Lock()
_counts: Counter[str] = Counter()

NAMES = (
    "login_calls",
    "login",
    "login_failed",
    "login_throttled",
    "refresh_calls",
    "refresh",
    "refresh_rejected",
    "reuse_detected",
    "spent_presented",
    "logout",
    "me",
    "me_rejected",
)


def bump(name: str) -> None:
    """Add one to the counter `name`."""
    with _lock:
        _counts[name] += 1


def snapshot() -> dict[str, int]:
    """Return every counter, zeros included."""
    with _lock:
        return {name: _counts[name] for name in NAMES}
