"""`/healthz`: readiness of each part the app needs, by name: database, cache, backend.

`backend_health()` is the one probe of the auth backend: `/healthz` and the
admin's health page (accounts/ops/views.py) both call it and read its result.
"""

import logging
import time
from dataclasses import dataclass

from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from ..cache import cache_health
from ..client import get_client
from ..decorators import token_exempt
from ..exceptions import BackendError

logger = logging.getLogger(__name__)

OK, UNAVAILABLE = "ok", "unavailable"


def database_health() -> str:
    """Return "ok" if the database answers `SELECT 1` (PostgreSQL's connect timeout: 3 s)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        logger.warning("Health check: database unavailable: %s", type(exc).__name__)
        return UNAVAILABLE
    return OK


@dataclass(frozen=True)
class BackendHealth:
    """One call to the backend's health path (AUTH_HEALTH_PATH): what came back, how fast."""

    state: str  # OK: an answer below 500; UNAVAILABLE otherwise
    http_status: int | None  # the answer's status; None when nothing usable came back
    seconds: float
    failure: str = ""  # what failed ("GET /users/me answered 503"), for the page and the log

    @property
    def ok(self) -> bool:
        return self.state == OK

    @property
    def milliseconds(self) -> int:
        return round(self.seconds * 1000)


def backend_health() -> BackendHealth:
    """Call the backend's health path once, within AUTH_HEALTH_TIMEOUT; never raise.

    Any answer below 500 counts as up (a 401 proves the service answers, not
    that sign-in works); a 5xx, a 429, a timeout or no connection as down.
    """
    started = time.monotonic()
    try:
        status = get_client().ping()
    except BackendError as exc:
        failure = str(exc) or type(exc).__name__
    except Exception as exc:  # noqa: BLE001 - a probe reports a failure, it does not raise one
        logger.exception("Health check: the backend probe itself failed")
        failure = type(exc).__name__
    else:
        return BackendHealth(OK, status, time.monotonic() - started)
    logger.warning("Health check: auth backend unavailable: %s", failure)
    return BackendHealth(UNAVAILABLE, None, time.monotonic() - started, failure)


@token_exempt  # a probe's request is nobody's session
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 when every part answers, else 503 with each part's state.

    `{"status", "database", "cache", "backend"}`, each "ok" or "unavailable".
    The cache is the shared one (Redis): down, it makes the answer 503 even
    though the database cache serves the app meanwhile (accounts/cache.py).
    """
    checks = {
        "database": database_health(),
        "cache": cache_health(),
        "backend": backend_health().state,
    }
    healthy = all(state == OK for state in checks.values())
    return JsonResponse(
        {"status": OK if healthy else UNAVAILABLE, **checks}, status=200 if healthy else 503
    )
