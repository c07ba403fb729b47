"""Form bodies in a charset other than UTF-8: a plain 400 page, before anything reads them.

Django (5.1+) accepts `application/x-www-form-urlencoded` only as UTF-8 and
raises `BadRequest` from `request.POST` when a POST says `charset=latin-1`
or `charset=utf-16`. `CsrfViewMiddleware` reads `request.POST` for every
POST, so such a request, with a valid `csrftoken` cookie, to any URL,
raised there; Django's 400 and 500 handlers are wrapped in
`requires_csrf_token`, which reads `request.POST` again and raises again
(the body is never marked as unreadable), once per middleware layer: a 500
from gunicorn without the app's headers and some 50 KB of chained
tracebacks in the log for every such request.

`FormCharsetMiddleware`, last in MIDDLEWARE, answers those requests itself
before any URL is resolved (an unknown URL's 404 handler reads the body
too) and before CSRF's `process_view`, so nothing ever reads the body; the
response still goes out through every middleware (X-Request-ID, security
headers, CSP). Django logs the 400 as its usual one line
("Bad Request: /path", `django.request`), with no traceback.
"""

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBadRequest, HttpResponseBase
from django.template.loader import render_to_string

from .responses import json_error, wants_json

logger = logging.getLogger(__name__)

FORM_TYPE = "application/x-www-form-urlencoded"


def unreadable_form(request: HttpRequest) -> bool:
    """Return whether reading `request.POST` would raise for the body's charset.

    The same test as Django's `HttpRequest._load_post_and_files`: a POST of
    FORM_TYPE whose `charset` names a known codec other than "utf-8".
    """
    return (
        request.method == "POST"
        and request.content_type == FORM_TYPE
        and request.encoding is not None
        and request.encoding.lower() != "utf-8"
    )


class FormCharsetMiddleware:
    """Answer 400 to a form POST in a charset other than UTF-8, before anything reads it.

    Place it last in MIDDLEWARE: every other middleware has then taken the
    request and wraps the 400 on its way out, and neither URL resolution
    (whose 404 handler reads the body) nor CSRF's `process_view` has run.
    The page is templates/400.html, rendered without the request as Django's
    own `bad_request` renders it (no session or user is loaded for it);
    scripts get the JSON error shape.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if not unreadable_form(request):
            return self.get_response(request)
        logger.debug("Form body in charset %r refused: forms are read as UTF-8", request.encoding)
        if wants_json(request):
            return json_error(400, "bad_request", "Send form data as UTF-8.")
        return HttpResponseBadRequest(render_to_string("accounts/400.html"))
