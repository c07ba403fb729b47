"""`/api/<path>`: the auth backend's API for browser scripts, on the app's own origin.

Tokens are attached server-side (the browser cannot read them), a 401
refreshes and replays once, and the answer comes back without the backend's
hop-by-hop headers or cookies: tokens change only through sign-in and refresh,
which the session records (accounts/state.py).

What goes out is exactly what came in: the path as the browser encoded it
(`allowed_path`), the query string byte for byte, the body whether sized or
chunked (`read_body`). What comes back is the backend's data and never a page
of this origin: a sandboxing Content-Security-Policy, `nosniff`, and anything
but JSON (or a type in AUTH_PROXY_INLINE_TYPES) as an attachment.
"""

import logging
import string
from urllib.parse import quote, unquote

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, RawPostDataException
from django.views.decorators.cache import never_cache

from .client import BackendAnswer, get_client
from .conf import conf
from .responses import json_error, json_view
from .state import TokenState

logger = logging.getLogger(__name__)

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
BODY_METHODS = frozenset(("POST", "PUT", "PATCH", "DELETE"))
# RFC 3986 §3.3: what a path segment holds unencoded (pchar's sub-delims, ":"
# and "@"), and "/" between segments. Everything else is percent-encoded
# again, "?", "#" and "%" included, so the backend decodes what Django did.
PATH_SAFE = "/!$&'()*+,;=:@"
# The query goes out as the browser sent it: only what HTTP cannot carry raw
# (controls, space, non-ASCII bytes) and "#" are percent-encoded.
QUERY_SAFE = "".join(c for c in string.punctuation if c != "#")
DOT_SEGMENTS = frozenset((".", ".."))
READ_CHUNK = 64 * 1024
# WSGI environ key -> the header forwarded to the backend.
FORWARDED_REQUEST_HEADERS = {
    "CONTENT_TYPE": "Content-Type",
    "HTTP_ACCEPT": "Accept",
    "HTTP_ACCEPT_LANGUAGE": "Accept-Language",
    "HTTP_IF_NONE_MATCH": "If-None-Match",
}
FORWARDED_RESPONSE_HEADERS = (
    "Cache-Control",
    "ETag",
    "Last-Modified",
    "Content-Language",
    "Retry-After",
)
# A proxied answer runs no script and loads nothing, even opened as a page
# (django-csp's middleware keeps a policy a view has set).
SANDBOX_POLICY = "sandbox; default-src 'none'"
JSON = "application/json"
UNTYPED = "application/octet-stream"


class LengthRequired(Exception):
    """A chunked body the WSGI server does not delimit (no `wsgi.input_terminated`)."""


def allowed_path(path: str) -> str | None:
    """Return the backend path to forward for `path`, or None when it may not go out.

    `path` is what Django's URL routing matched: the browser's path, decoded
    once (under WSGI the server decodes PATH_INFO). It is percent-encoded
    again for the wire, so the backend, decoding once, sees exactly `path`:
    `/api/users/me%3Fx=1` reaches `/users/me%3Fx=1`, never `/users/me?x=1`.

    The checks run on `path` and on `path` decoded once more (a backend that
    decodes twice would turn `%252e%252e` into `..`): no dot segments (also
    as `..;`, which some servers strip to `..`), no empty segments except a
    trailing slash, no backslash, no NUL; then the allow-list prefix.
    """
    if not (_plain(path) and _plain(unquote(path))):
        return None
    if not path.startswith(conf.proxy_prefixes):
        return None
    return "/" + quote(path, safe=PATH_SAFE)


def _plain(path: str) -> bool:
    if "\\" in path or "\x00" in path:
        return False
    *inner, last = path.split("/")
    if any(not segment for segment in inner):
        return False
    return not any(segment.partition(";")[0] in DOT_SEGMENTS for segment in (*inner, last))


def forwarded_query(request: HttpRequest) -> str:
    """Return the request's query string as it goes to the backend: as sent, made wire-safe."""
    raw = request.META.get("QUERY_STRING")
    if not raw:
        return ""
    try:
        data = raw.encode("latin-1")  # WSGI strings carry the bytes as latin-1 (PEP 3333)
    except UnicodeEncodeError:
        data = raw.encode()
    return quote(data, safe=QUERY_SAFE)


def body_limit() -> int:
    """Return the body size limit: AUTH_PROXY_MAX_BODY_BYTES, or Django's own if lower."""
    django_limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if django_limit is None:
        return conf.proxy_max_body_bytes
    return min(conf.proxy_max_body_bytes, django_limit)


def read_body(request: HttpRequest) -> bytes:
    """Return the request body, sized (Content-Length) or chunked, at most `body_limit()` bytes.

    A chunked body has no Content-Length, so Django reads it as empty. Servers
    that decode chunked input for the application say so with
    `wsgi.input_terminated` (gunicorn does): its stream ends where the body
    does, and it is read here up to the limit. Without that flag the stream's
    end cannot be known, and the answer is 411 Length Required.

    :raises RequestDataTooBig: the body is larger than the limit.
    :raises LengthRequired: a chunked body the server does not delimit.
    """
    limit = body_limit()
    meta = request.META
    declared = meta.get("CONTENT_LENGTH")
    if declared or "chunked" not in meta.get("HTTP_TRANSFER_ENCODING", "").lower():
        if declared and (not declared.isdigit() or int(declared) > limit):
            raise RequestDataTooBig  # a Content-Length over the limit; api_proxy answers 413
        return request.body
    if not meta.get("wsgi.input_terminated"):
        raise LengthRequired
    stream, chunks, size = meta["wsgi.input"], [], 0
    while size <= limit:
        chunk = stream.read(min(READ_CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise RequestDataTooBig  # a chunked body over the limit; api_proxy answers 413
    return b"".join(chunks)


def served_inline(media_type: str) -> bool:
    """Return whether a backend answer of `media_type` may be shown inline (JSON, or allowed)."""
    if media_type == JSON or media_type in conf.proxy_inline_types:
        return True
    return media_type.startswith("application/") and media_type.endswith("+json")


def relayed(answer: BackendAnswer) -> HttpResponse:
    """Return the browser's response for a backend answer."""
    content_type = answer.headers.get("Content-Type") or UNTYPED
    response = HttpResponse(answer.content, status=answer.status, content_type=content_type)
    for name in FORWARDED_RESPONSE_HEADERS:
        value = answer.headers.get(name)
        if value is not None:
            response[name] = value
    response["Content-Security-Policy"] = SANDBOX_POLICY
    response["X-Content-Type-Options"] = "nosniff"
    if not served_inline(content_type.partition(";")[0].strip().lower()):
        # Opened as a page, the backend's HTML or script would run as this origin.
        response["Content-Disposition"] = "attachment"
    return response


@json_view
@never_cache
def api_proxy(request: HttpRequest, path: str) -> HttpResponse:
    """Forward a same-origin script call to the backend as the signed-in user."""
    backend_path = allowed_path(path)
    if backend_path is None:
        logger.debug("API path refused: %r", path)
        return json_error(404, "not_found", "No such API path.")
    if request.method not in METHODS:
        response = json_error(405, "method_not_allowed", f"{request.method} is not allowed.")
        response["Allow"] = ", ".join(METHODS)
        return response
    if not request.user.is_authenticated:
        return json_error(401, "signed_out", "Sign in to use the API.")
    body = None
    if request.method in BODY_METHODS:
        try:
            body = read_body(request)
        except RequestDataTooBig:
            return json_error(413, "too_large", "The request body is too large.")
        except LengthRequired:
            return json_error(411, "length_required", "Send the body with a Content-Length.")
        except RawPostDataException:
            # A multipart POST: CsrfViewMiddleware read request.POST (looking
            # for the form's token), which consumes the body for good.
            return json_error(
                415, "unsupported_body", "A multipart POST cannot be forwarded; send JSON."
            )
    meta = request.META
    headers = {name: meta[key] for key, name in FORWARDED_REQUEST_HEADERS.items() if meta.get(key)}
    answer = get_client().request(
        request.method,
        backend_path,
        auth=TokenState.of(request),
        params=forwarded_query(request) or None,
        body=body,
        headers=headers,
        exact=True,
    )
    return relayed(answer)


# What the token middleware counts as the proxy's answers (accounts/ops/metrics.py), by
# the view rather than a URL name the project chooses.
api_proxy.is_token_proxy = True
