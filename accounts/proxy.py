"""`/api/<path>`: the auth backend's API for browser scripts, on the app's own origin.

Tokens are attached server-side (the browser cannot read them), a 401
refreshes and replays once, and the answer comes back without the backend's
hop-by-hop headers or cookies: tokens change only through sign-in and refresh,
which the session records (accounts/state.py).
"""

import logging
import posixpath
from urllib.parse import unquote

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache

from .client import get_client
from .conf import conf
from .responses import json_error, json_view
from .state import TokenState

logger = logging.getLogger(__name__)

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
FORWARDED_REQUEST_HEADERS = ("Content-Type", "Accept", "Accept-Language", "If-None-Match")
FORWARDED_RESPONSE_HEADERS = (
    "Content-Type",
    "Cache-Control",
    "ETag",
    "Last-Modified",
    "Content-Language",
    "Retry-After",
)


def allowed_path(path: str) -> str | None:
    """Return the normalised backend path for `path`, or None when it is off the allow-list.

    Decoding first and refusing dot segments, backslashes and empty segments
    means `users/../auth/refresh`, `users/%2e%2e/x`, `users%2F..` or `users//x`
    can never reach outside the allowed prefixes.
    """
    decoded = unquote(path)
    if "\\" in decoded or "\x00" in decoded or "//" in decoded:
        return None
    segments = decoded.split("/")
    if any(segment in (".", "..") for segment in segments):
        return None
    normalised = posixpath.normpath("/" + decoded).lstrip("/")
    if decoded.endswith("/") and normalised:
        normalised += "/"
    if not any(normalised.startswith(prefix) for prefix in conf.proxy_prefixes):
        return None
    return "/" + path  # forward exactly what was checked, still encoded


@json_view
@never_cache
def api_proxy(request: HttpRequest, path: str) -> HttpResponse:
    """Forward a same-origin script call to the backend as the signed-in user."""
    backend_path = allowed_path(path)
    if backend_path is None:
        return json_error(404, "not_found", "No such API path.")
    if request.method not in METHODS:
        response = json_error(405, "method_not_allowed", f"{request.method} is not allowed.")
        response["Allow"] = ", ".join(METHODS)
        return response
    if not request.user.is_authenticated:
        return json_error(401, "signed_out", "Sign in to use the API.")
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if not declared.isdigit() or int(declared) > conf.proxy_max_body_bytes:
        return json_error(413, "too_large", "The request body is too large.")
    try:
        body = request.body if request.method in ("POST", "PUT", "PATCH", "DELETE") else None
    except RequestDataTooBig:
        return json_error(413, "too_large", "The request body is too large.")
    headers = {
        name: request.headers[name] for name in FORWARDED_REQUEST_HEADERS if name in request.headers
    }
    answer = get_client().request(
        request.method,
        backend_path,
        auth=TokenState.of(request),
        params=request.META.get("QUERY_STRING") or None,
        body=body,
        headers=headers,
    )
    response = HttpResponse(answer.content, status=answer.status)
    for name in FORWARDED_RESPONSE_HEADERS:
        if name in answer.headers:
            response[name] = answer.headers[name]
    return response
