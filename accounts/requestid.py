"""Request correlation: one id per request, on the response, in the logs, sent to the backend.

`RequestIdMiddleware` (first in MIDDLEWARE) gives every request an id and
keeps it in a context variable while the request is served; `current()`
reads it (accounts/client.py sends it as `X-Request-ID` on every backend
call), and `RequestIdFilter` writes it into every log record. The refresh
pool runs each call in a copy of the submitting request's context
(accounts/refresh.py), so a refresh made for a request carries its id too.
"""

import contextvars
import logging
import re
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase

from .conf import conf
from .forwarded import from_trusted_proxy

HEADER = "X-Request-ID"
# What an id from a proxy may look like: enough for a UUID, a ULID or an
# Amazon trace id, nothing that could end a header line or a log field.
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "accounts_request_id", default=None
)


def current() -> str | None:
    """Return the id of the request being served, or None outside a request."""
    return _current.get()


class RequestIdMiddleware:
    """Give every request an id: `request.request_id`, `current()`, the `X-Request-ID` header.

    Place it first in MIDDLEWARE, so everything after it (and its logs) runs
    with the id. An incoming `X-Request-ID` is kept only from a trusted proxy
    (a peer in AUTH_TRUSTED_PROXIES, with AUTH_TRUSTED_PROXY_COUNT > 0) and
    only if it is 1–128 characters of `[A-Za-z0-9._:-]`; otherwise a new one
    is made. To take the id from elsewhere, subclass and override
    `get_request_id`.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]):
        self.get_response = get_response
        # Read once here: Django builds the middleware when the WSGI handler
        # is made, so a malformed AUTH_TRUSTED_PROXIES stops gunicorn at start
        # with the setting's name instead of failing every request.
        conf.trusted_proxies  # noqa: B018 - reading it validates it

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        request_id = self.get_request_id(request)
        request.request_id = request_id
        token = _current.set(request_id)
        try:
            response = self.get_response(request)
        except BaseException:
            _current.reset(token)
            raise
        response.headers[HEADER] = request_id
        # Reset when the server closes the response, not now: Django's handler
        # logs 4xx/5xx answers (`django.request`) after the middleware chain
        # returns, and a streaming body is produced after it too.
        response._resource_closers.append(lambda: _end(token))
        return response

    def get_request_id(self, request: HttpRequest) -> str:
        """Return the id for `request`: a trusted proxy's, if sane, else a new one."""
        if from_trusted_proxy(request):
            # From anyone else the header is the client's to invent: a chosen
            # id could be made to collide with another request's.
            incoming = request.headers.get(HEADER, "")
            if _SANE_ID.fullmatch(incoming):
                return incoming
        return uuid.uuid4().hex


def _end(token: contextvars.Token) -> None:
    try:
        _current.reset(token)
    except ValueError:
        # Closed in another context than the one the id was set in (an ASGI
        # server closes the response from a worker thread): clear it there.
        _current.set(None)


class RequestIdFilter(logging.Filter):
    """Set `record.request_id` on every record: the current request's id, or "-".

    Put it on each handler whose format uses `%(request_id)s` (config/settings/base.py).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _current.get() or "-"
        return True
