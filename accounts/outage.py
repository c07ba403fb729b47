"""When the database does not answer: a 503 "Service temporarily unavailable", never a 500.

An exception anywhere in a request (a view, a middleware reading the
session, SessionMiddleware saving it on the way out) is turned into a
response by Django at the middleware layer it escaped from, through the
`handler500` view: a middleware wrapping `get_response` in try/except never
sees one raised further in. So the page is chosen there: config/urls.py
names `server_error` the handler500. For a lost or refused database
connection (OperationalError, InterfaceError) it answers 503 with
Retry-After: a page that needs neither the database nor the session
(accounts/templates/accounts/outage.html, rendered without the request's context processors),
or JSON for scripts (`accounts.responses.wants_json`, the `/api/` proxy
too). Every other error keeps Django's 500 page. With DEBUG on, Django
shows its debug page before any handler runs.

Logged once a minute per process at ERROR, with the traceback; Django's own
per-request "Service Unavailable" record is dropped by `OutageLogFilter`
(config/settings/base.py LOGGING), so an outage does not flood the log.
"""

import logging
import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.views import defaults

from .pacing import AtMostEvery
from .responses import json_error, wants_json

logger = logging.getLogger(__name__)

RETRY_AFTER = 30
LOG_EVERY = 60.0
OUTAGE_ERRORS = (OperationalError, InterfaceError)

_outage_log = AtMostEvery(LOG_EVERY)


def outage_cause(exc: BaseException | None) -> BaseException | None:
    """Return the lost-database error behind `exc` (itself, its cause or context), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OUTAGE_ERRORS):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def unavailable_response(request: HttpRequest) -> HttpResponse:
    """Return the 503 answer: JSON for scripts, else a page that touches no database."""
    if wants_json(request):
        response = json_error(
            503, "service_unavailable", "The service is temporarily unavailable; try again shortly."
        )
    else:
        # No request passed: the context processors would load the session and the user.
        response = HttpResponse(render_to_string("accounts/outage.html"), status=503)
    response["Retry-After"] = str(RETRY_AFTER)
    response["Cache-Control"] = "no-store"
    # Made outside the CSP and X-Frame-Options middleware when the session
    # save failed on the way out: the page carries its own (it loads nothing).
    response["Content-Security-Policy"] = "default-src 'none'; frame-ancestors 'none'"
    response["X-Frame-Options"] = "DENY"
    return response


def server_error(request: HttpRequest, *args, **kwargs) -> HttpResponse:
    """The handler500: 503 when the database is unreachable, Django's 500 page otherwise."""
    cause = outage_cause(sys.exc_info()[1])
    if cause is None:
        return defaults.server_error(request, *args, **kwargs)
    _log_outage(cause)
    return unavailable_response(request)


def _log_outage(cause: BaseException) -> None:
    if not _outage_log.due():
        return
    logger.error(
        "Database unavailable (%s); answering 503 until it is back",
        type(cause).__name__,
        exc_info=cause,
    )


class OutageLogFilter(logging.Filter):
    """Drop django.request's per-request records of a database outage (logged once a minute)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return outage_cause(exc) is None
