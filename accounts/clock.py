"""The auth backend's clock, as the `Date` header of its answers shows it.

A backend whose clock runs ahead or behind writes `exp` (in a JWT) and
`Expires` (in a cookie) on its own clock. Read on this server's clock, a token
from a backend five minutes behind looks expired from the start (a refresh on
every request), and one from a backend ahead looks valid after it has lapsed.
`Max-Age` is relative and needs no correction; the absolute times do.

Every answer's `Date` is compared with the middle of the call on this
server's clock; `Date` has whole seconds, so a difference under
SIGNIFICANT seconds is taken as none. An answer that took longer than
SIGNIFICANT seconds measures nothing: its `Date` could have been written
anywhere in that time (a refresh the backend held for 8 s would look like a
clock 4 s ahead). `local()` turns a backend time into this server's.
"""

import logging
from email.utils import parsedate_to_datetime

from .pacing import AtMostEvery

logger = logging.getLogger(__name__)

SIGNIFICANT = 2.0
_skew = 0.0
_report = AtMostEvery(60.0)


def measure(date_header: str | None, *, sent_at: float, received_at: float) -> float | None:
    """Return the skew one answer's `Date` shows (0.0 under SIGNIFICANT), or None without one
    or when the call took too long to tell."""
    if not date_header or received_at - sent_at > SIGNIFICANT:
        return None
    try:
        backend_time = parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # Date truncates to the second: on average the backend was half a second on.
    measured = backend_time + 0.5 - (sent_at + received_at) / 2
    return measured if abs(measured) >= SIGNIFICANT else 0.0


def observe(date_header: str | None, *, sent_at: float, received_at: float) -> None:
    """Update the skew from one answer's `Date` (ignored when missing or unreadable)."""
    global _skew
    measured = measure(date_header, sent_at=sent_at, received_at=received_at)
    if measured is None:
        return
    _skew = measured
    if _skew and _report.due():
        logger.warning(
            "The auth backend's clock is %+.0f s off this server's; token expiries are "
            "read on this server's clock",
            _skew,
        )


def skew() -> float:
    """Seconds the backend's clock is ahead of this server's (negative: behind)."""
    return _skew


def local(backend_time: float) -> float:
    """Return a backend timestamp on this server's clock."""
    return backend_time - _skew
