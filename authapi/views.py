"""The reference auth API's endpoints, answering JSON only (contract: docs/reference-api.md).

Errors take the NestJS shape `{"statusCode", "message", "error"}` so the app
is tested against what such a backend really sends.
"""

import contextlib
import functools
import json
import logging
import time
from http import HTTPStatus

from django.contrib.auth.hashers import make_password
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.http import http_date
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from . import faults, shapes, stats, throttle, tokens
from .conf import api_settings
from .cookies import clear_token_cookies, set_token_cookies
from .models import ApiUser

logger = logging.getLogger(__name__)

MAX_EMAIL_LENGTH = 254
MAX_PASSWORD_LENGTH = 1024
ANY_METHOD = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


class ApiError(Exception):
    """An error answer: status, message and optional extra headers.

    `body` replaces the NestJS shape for a backend with its own (brocoders' 422).
    """

    def __init__(self, status: int, message, headers: dict | None = None, body=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.body = body


def error_response(status: int, message, headers: dict | None = None, body=None) -> JsonResponse:
    """Return a NestJS-shaped JSON error, or `body` when given."""
    if body is None:
        body = {"statusCode": status, "message": message, "error": HTTPStatus(status).phrase}
    response = JsonResponse(body, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def api_view(*methods: str):
    """Restrict a view to `methods`, turn ApiError into JSON, set Content-Length.

    The API runs without middleware, so Content-Length is set here; with it the
    server keeps connections alive for the app's pooled client.
    """

    def decorator(view):
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method not in methods:
                response = error_response(405, f"Cannot {request.method} {request.path}")
                response["Allow"] = ", ".join(methods)
            else:
                try:
                    response = view(request, *args, **kwargs)
                except ApiError as exc:
                    response = error_response(exc.status, exc.message, exc.headers, exc.body)
                except Exception:
                    # An API answers JSON even when it breaks, DEBUG or not.
                    logger.exception("Unhandled error in %s %s", request.method, request.path)
                    response = error_response(500, "Internal server error")
            if response.status_code != HTTPStatus.NO_CONTENT:
                # A 204 has no body and, as Express sends it, no Content-Length.
                response["Content-Length"] = str(len(response.content))
            response["Cache-Control"] = "no-store"
            if api_settings.clock_offset:
                # The server's clock as a client can read it (the WSGI server
                # adds a true Date only when the application sent none).
                response["Date"] = http_date(tokens.now())
            return response

        return wrapper

    return decorator


def _json_object(request: HttpRequest) -> dict:
    try:
        data = json.loads(request.body or b"null")
    except RequestDataTooBig as exc:
        raise ApiError(413, "Body is too large") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "Body must be valid JSON") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "Body must be a JSON object")
    return data


def _validated_credentials(data: dict) -> tuple[str, str]:
    email, password = data.get("email"), data.get("password")
    errors = []
    if not isinstance(email, str) or not email.strip():
        errors.append("email must be a non-empty string")
    elif len(email) > MAX_EMAIL_LENGTH:
        errors.append(f"email must be shorter than or equal to {MAX_EMAIL_LENGTH} characters")
    if not isinstance(password, str) or not password:
        errors.append("password must be a non-empty string")
    elif len(password) > MAX_PASSWORD_LENGTH:
        errors.append(f"password must be shorter than or equal to {MAX_PASSWORD_LENGTH} characters")
    if errors:
        raise ApiError(400, errors)
    return email.strip().lower(), password


@functools.cache
def _dummy_hash() -> str:
    return make_password("not-a-real-password")


@sensitive_variables("password")
def _authenticate(email: str, password: str) -> ApiUser | None:
    user = ApiUser.objects.filter(email__iexact=email, is_active=True).first()
    if user is None:
        # Spend the same hashing time as a real check, so response time does
        # not tell which emails have accounts.
        ApiUser(password=_dummy_hash()).check_password(password)
        return None
    return user if user.check_password(password) else None


@sensitive_post_parameters()
@api_view("POST")
@sensitive_variables("password", "issued")
def login(request: HttpRequest) -> HttpResponse:
    stats.bump("login_calls")
    delay = faults.login_delay()
    if delay:
        # Test hook: a slow backend holds the app's sign-in threads.
        time.sleep(delay)
    email, password = _validated_credentials(_json_object(request))
    ip = throttle.client_ip(request)
    wait = throttle.retry_after(email=email, ip=ip)
    if wait is not None:
        stats.bump("login_throttled")
        raise ApiError(429, "Too many sign-in attempts, try again later", {"Retry-After": wait})
    user = _authenticate(email, password)
    if user is None:
        stats.bump("login_failed")
        throttle.record_failure(email=email, ip=ip)
        raise _login_failure(email)
    throttle.clear_failures(email=email, ip=ip)
    issued = tokens.sign_in(user)
    stats.bump("login")
    profile = shapes.profile(user)
    return _issued_response(issued, profile, user=profile, status=201)


def _login_failure(email: str) -> ApiError:
    """The answer to a wrong email or password (AUTHAPI_LOGIN_FAILURE_STATUS).

    422 is brocoders/nestjs-boilerplate's, which tells an unknown email from a
    wrong password; any other status is the NestJS error shape.
    """
    status = api_settings.login_failure_status
    if status != HTTPStatus.UNPROCESSABLE_ENTITY:
        return ApiError(status, "Invalid credentials")
    known = ApiUser.objects.filter(email__iexact=email, is_active=True).exists()
    errors = {"password": "incorrectPassword"} if known else {"email": "notFound"}
    return ApiError(status, "Invalid credentials", body={"status": status, "errors": errors})


@sensitive_variables("issued")
def _issued_response(
    issued: tokens.IssuedTokens, data: dict, *, user: dict | None = None, status: int = 200
) -> HttpResponse:
    """Hand out a pair as AUTHAPI_TOKEN_TRANSPORT says.

    `cookies`: `data` as the answer, both tokens as cookies. `body`: both
    tokens in the JSON answer, at their (dotted) fields. `mixed`: the access
    token in the JSON answer, the refresh token as a cookie. In body and mixed
    transport AUTHAPI_LOGIN_ANSWER_USER adds `tokenExpires` (ms since the
    epoch) next to the access token, and `user` on a sign-in.
    """
    transport = api_settings.token_transport
    if transport == "cookies":  # noqa: S105 - a transport name
        response = JsonResponse(data, status=status)
        set_token_cookies(response, issued)
        return response
    body: dict = {}
    access_path = api_settings.access_field_path
    shapes.put(body, access_path, issued.access_token)
    if transport == "body" and issued.refresh_token is not None:  # noqa: S105
        shapes.put(body, api_settings.refresh_field_path, issued.refresh_token)
    if api_settings.login_answer_user:
        expires = tokens.access_expires_ms(issued.access_token)
        shapes.put(body, (*access_path[:-1], "tokenExpires"), expires)
        if user is not None:
            shapes.put(body, (*access_path[:-1], "user"), user)
    response = JsonResponse(body, status=status)
    if transport == "mixed":  # noqa: S105 - a transport name
        set_token_cookies(response, issued, access=False)
    return response


def _bearer(request: HttpRequest) -> str:
    """The credentials of `Authorization: Bearer …`, or ""."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def _refresh_token(request: HttpRequest) -> str:
    """The refresh token a call presents.

    AUTHAPI_REFRESH_IN=bearer: `Authorization: Bearer` only. Otherwise where
    it went out: its body's (dotted) field in body transport, else its cookie.
    """
    if api_settings.refresh_in == "bearer":
        return _bearer(request)
    if api_settings.tokens_in_body:
        value = shapes.get(_json_object(request), api_settings.refresh_field_path)
        return value if isinstance(value, str) else ""
    return request.COOKIES.get(api_settings.refresh_cookie, "")


@api_view("POST")
@sensitive_variables("raw", "issued")
def refresh(request: HttpRequest) -> HttpResponse:
    stats.bump("refresh_calls")
    delay = faults.refresh_delay()
    if delay:
        # Test hook: a slow backend widens the window in which races happen.
        time.sleep(delay)
    raw = _refresh_token(request)
    if not raw:
        stats.bump("refresh_rejected")
        raise ApiError(401, "Missing refresh token")
    try:
        issued = tokens.rotate(raw)
    except tokens.TokenRejected as exc:
        stats.bump("refresh_rejected")
        logger.info("Refresh refused: %s", exc.reason)
        raise ApiError(401, "Invalid refresh token") from exc
    stats.bump("refresh")
    return _issued_response(issued, {"ok": True})


@api_view("POST")
@sensitive_variables("raw_refresh", "raw_access")
def logout(request: HttpRequest) -> HttpResponse:
    """Revoke the sign-in the call presents and clear its cookies.

    By default the refresh token's family, or without one the access token's.
    With AUTHAPI_REFRESH_IN=bearer the Bearer slot holds the access token
    (brocoders' `AuthGuard('jwt')`): without a valid one, 401.
    """
    if api_settings.refresh_in == "bearer":
        raw_access = _access_token(request)
        try:
            claims = tokens.decode_access(raw_access) if raw_access else None
        except tokens.TokenRejected:
            claims = None
        if claims is None:
            raise ApiError(401, "Unauthorized")
        tokens.revoke_family(claims["sid"])
    else:
        raw_refresh = _refresh_token(request)
        raw_access = _access_token(request)
        if raw_refresh:
            tokens.revoke(raw_refresh)
        elif raw_access:
            with contextlib.suppress(tokens.TokenRejected):
                tokens.revoke_family(tokens.decode_access(raw_access)["sid"])
    stats.bump("logout")
    status = api_settings.logout_status
    if status == HTTPStatus.NO_CONTENT:
        response = HttpResponse(status=status, content_type=None)
        del response["Content-Type"]
    else:
        response = JsonResponse({"ok": True}, status=status)
    transport = api_settings.token_transport
    if transport != "body":  # noqa: S105 - a transport name
        clear_token_cookies(response, access=transport == "cookies")  # noqa: S105
    return response


def _access_token(request: HttpRequest) -> str:
    """The access token a call presents.

    Only the AUTHAPI_ACCESS_HEADER header's raw value when one is set; else
    `Authorization: Bearer`, and in cookie transport the access cookie after it.
    """
    header = api_settings.access_header
    if header:
        return request.headers.get(header, "").strip()
    bearer = _bearer(request)
    if bearer or api_settings.token_transport != "cookies":  # noqa: S105 - a transport name
        return bearer  # a passport-jwt backend reads the header only
    return request.COOKIES.get(api_settings.access_cookie, "")


@api_view("GET")
@sensitive_variables("raw")
def me(request: HttpRequest) -> HttpResponse:
    """The profile of the access token's user; 401, or (AUTHAPI_ME_GUEST) a guest, without."""
    raw = _access_token(request)
    user = None
    if raw:
        with contextlib.suppress(tokens.TokenRejected):
            user = tokens.user_for_access(raw)
    if user is None:
        stats.bump("me_rejected")
        if api_settings.me_guest:
            return JsonResponse(shapes.GUEST)
        raise ApiError(401, "Unauthorized")
    stats.bump("me")
    return JsonResponse(shapes.profile(user))


def hook_view(*methods: str):
    """Like `api_view`, for a path that exists only when AUTHAPI_EXPOSE_STATS is on.

    Otherwise every method answers 404, as for a path outside the API, so the
    hook's existence does not show through a 405.
    """

    def decorator(view):
        @api_view(*ANY_METHOD)
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not api_settings.expose_stats:
                raise ApiError(404, f"Cannot {request.method} {request.path}")
            if request.method not in methods:
                allow = {"Allow": ", ".join(methods)}
                raise ApiError(405, f"Cannot {request.method} {request.path}", allow)
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


@hook_view("GET")
def stats_view(request: HttpRequest) -> HttpResponse:
    """Counters for tests and benchmarks; 404 unless AUTHAPI_EXPOSE_STATS."""
    return JsonResponse(stats.snapshot())


@hook_view("GET", "POST")
def faults_view(request: HttpRequest) -> HttpResponse:
    """Read (GET) or set (POST a JSON object) the running process's faults.

    `{"refresh_delay": 0.5}` stalls every later refresh half a second, until
    set again; `null` goes back to AUTHAPI_REFRESH_DELAY. 404 unless
    AUTHAPI_EXPOSE_STATS.
    """
    if request.method == "GET":
        return JsonResponse(faults.current())
    try:
        values = faults.set_faults(**_json_object(request))
    except faults.InvalidFault as exc:
        raise ApiError(400, str(exc)) from exc
    logger.info("Faults set: %s", values)
    return JsonResponse(values)


@api_view(*ANY_METHOD)
def unknown_path(request: HttpRequest) -> HttpResponse:
    """Answer any path outside the API with JSON, also under DEBUG."""
    raise ApiError(404, f"Cannot {request.method} {request.path}")


def bad_request(request, exception=None):
    return error_response(400, "Bad request")


def not_found(request, exception=None):
    return error_response(404, f"Cannot {request.method} {request.path}")


def server_error(request):
    return error_response(500, "Internal server error")
