"""Refreshes a test has done before its request: the request then collects at once.

Before a view the middleware only starts a refresh (accounts/renewal.py,
`refresh_if_due`); a view that calls no backend is served without waiting,
and its response carries the new pair only if the refresh has finished by
then. A test about what that response carries makes the outcome ready first.
"""

import time
from concurrent.futures import wait

from accounts import refresh
from tests.fakes import record_of


def refreshed_in_advance(client, settle) -> None:
    """Spend the client's refresh-1 now, as a concurrent request of its session would."""
    binding = record_of(client).binding
    refresh.outcome("refresh-1", binding=binding, keep_for=600, deadline=time.monotonic() + 5)
    wait(settle, timeout=5)
