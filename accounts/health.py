"""`/healthz`: readiness of each part the app needs, by name: database, cache, backend."""

import logging

from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from .cache import cache_health
from .client import get_client
from .exceptions import BackendError

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


def backend_health() -> str:
    """Return "ok" if the auth backend answers below 500 within AUTH_HEALTH_TIMEOUT."""
    try:
        get_client().ping()
    except BackendError as exc:
        logger.warning("Health check: auth backend unavailable: %s", exc)
        return UNAVAILABLE
    return OK


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 when every part answers, else 503 with each part's state.

    `{"status", "database", "cache", "backend"}`, each "ok" or "unavailable".
    The cache is the shared one (Redis): down, it makes the answer 503 even
    though the database cache serves the app meanwhile (accounts/cache.py).
    """
    checks = {"database": database_health(), "cache": cache_health(), "backend": backend_health()}
    healthy = all(state == OK for state in checks.values())
    return JsonResponse(
        {"status": OK if healthy else UNAVAILABLE, **checks}, status=200 if healthy else 503
    )
