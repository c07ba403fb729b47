"""The one module that talks HTTP to the auth backend.

Everything server-side goes through `AuthApiClient` (or the subclass named by
AUTH_CLIENT_CLASS): a pooled `requests.Session` per process, a (connect, read)
timeout on every call, paths from settings, and failures translated into
`accounts.exceptions` where they meet the network, chained with `raise … from`.
"""

import dataclasses
import functools
import json
import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from http.cookiejar import DefaultCookiePolicy
from typing import Any, Protocol

import requests
from django.utils.module_loading import import_string
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from . import clock, metrics, requestid
from .conf import conf
from .cookies import COOKIE_VALUE, BackendCookie, parse_set_cookies
from .exceptions import (
    BackendError,
    BackendProtocolError,
    BackendUnavailable,
    InvalidCredentials,
    Throttled,
)
from .models import UserProfile
from .tokens import access_token_claims

logger = logging.getLogger(__name__)

DEFAULT_RETRY_AFTER = 60
MAX_JSON_BYTES = 1024 * 1024
# RFC 6265 §4.1.1 cookie-octets: what may go into a Cookie header (and what
# `requests` can encode). Anything else is treated as no token at all.
TOKEN_VALUE = re.compile(r"^[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]{1,8192}$")


def usable_token(value: str | None) -> str | None:
    """Return `value` if it can be a token in a Cookie or Authorization header, else None."""
    if value and TOKEN_VALUE.match(value):
        return value
    return None


@dataclass(frozen=True, repr=False)
class Tokens:
    """A pair of token values (either may be missing). Its repr never shows them."""

    access: str | None = None
    refresh: str | None = None

    def __repr__(self) -> str:
        shown = {k: "<hidden>" if v else None for k, v in self.__dict__.items()}
        return f"Tokens(access={shown['access']}, refresh={shown['refresh']})"

    def updated_by(self, cookies: list[BackendCookie]) -> "Tokens":
        """Return these tokens with whatever `cookies` set or delete applied."""
        access, refresh = self.access, self.refresh
        for cookie in cookies:
            value = None if cookie.deletes else usable_token(cookie.value)
            if cookie.name == conf.access_cookie:
                access = value
            elif cookie.name == conf.refresh_cookie:
                refresh = value
        return Tokens(access=access, refresh=refresh)


class RefreshRefused(Exception):
    """The backend refused a refresh token (400/401/403): that sign-in is over."""


@dataclass(frozen=True)
class BackendAnswer:
    """A backend response reduced to what callers use."""

    status: int
    content: bytes
    headers: Mapping[str, str]
    cookies: list[BackendCookie]

    @property
    def data(self) -> Any:
        """The body as JSON, or None when it is not JSON (or too large to be)."""
        if len(self.content) > MAX_JSON_BYTES:
            return None
        try:
            return json.loads(self.content)
        except ValueError:
            return None


class TokenSource(Protocol):
    """Where an authenticated call gets its tokens, and renews them after a 401.

    `accounts.state.TokenState` is the one a request uses; a plain `Tokens`
    (no renewal) serves sign-in, which has just received its tokens.
    """

    def tokens_for_call(self) -> Tokens: ...

    def renew_after_rejection(self) -> Tokens: ...

    def end(self, reason: str) -> None:
        """End the sign-in and raise SessionEnded."""


class _NoCookies(DefaultCookiePolicy):
    """Keep nothing in the shared session's jar: its tokens belong to one user."""

    def set_ok(self, cookie, request):
        return False


def _retry_after(value: str | None) -> int:
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER


def _never_sent(exc: requests.RequestException) -> bool:
    """Return whether the request certainly never reached the backend."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError | ConnectTimeoutError)


class _BackendSession(requests.Session):
    """A requests.Session for a peer service: no cookie jar, no environment, no redirects.

    The backend is not the open web: no HTTP(S)_PROXY or ~/.netrc look-ups
    (requests reads both per call), and its cookies belong to one user, so the
    jar keeps none. With nothing of the session's own to merge into a call,
    `request()` prepares it and hands it to the mounted (pooled) adapter
    directly, without `Session.request`'s per-call merging of jars,
    environment, hooks and redirect history: about a quarter of the client's
    CPU per call (bench/README.md, "(e) A refresh's app CPU").
    """

    def __init__(self):
        super().__init__()
        self.trust_env = False
        self.cookies.set_policy(_NoCookies())

    def request(
        self,
        method: str,
        url: str,
        *,
        params=None,
        data=None,
        json=None,
        headers: Mapping[str, str] | None = None,
        timeout=None,
        allow_redirects: bool = False,
        stream: bool = False,
    ) -> requests.Response:
        if allow_redirects:
            raise ValueError("calls to the auth backend never follow redirects")
        prepared = requests.Request(
            method.upper(),
            url,
            headers={**self.headers, **(headers or {})},
            data=data or {},
            json=json,
            params=params or {},
        ).prepare()
        return self.get_adapter(url).send(
            prepared, stream=stream, timeout=timeout, verify=self.verify, cert=self.cert
        )


def _session() -> requests.Session:
    session = _BackendSession()
    _mount(session, conf.pool_size)
    return session


class _Adapter(HTTPAdapter):
    """requests' adapter, minus the cookie jar it fills from every answer.

    The client reads `Set-Cookie` itself (accounts/cookies.py); requests would
    parse each one again with http.cookiejar into `response.cookies`, which
    nothing reads: a tenth of a refresh call's CPU.
    """

    def build_response(self, req: requests.PreparedRequest, resp) -> requests.Response:
        response = requests.Response()
        response.status_code = resp.status
        response.headers = CaseInsensitiveDict(resp.headers)
        response.encoding = get_encoding_from_headers(response.headers)
        response.raw = resp
        response.reason = resp.reason
        response.url = req.url.decode() if isinstance(req.url, bytes) else req.url
        response.request = req
        response.connection = self
        return response


def _mount(session: requests.Session, pool_size: int) -> None:
    adapter = _Adapter(pool_connections=min(4, pool_size), pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)


class _ExactSession:
    """A stand-in for the backend session in `_call` that sends the URL exactly as built.

    Preparing a request the usual way re-quotes its URL: `%41` becomes `A`,
    `%2E%2E` becomes `..` (which the backend then resolves). The `/api/` proxy
    forwards the browser's path and query as they came (accounts/proxy.py), so
    this prepares the request by hand and sends it through the session's own
    adapter: the same connection pool, the same exceptions. No default
    headers either: no `Accept-Encoding`, so the backend answers uncompressed.
    """

    def __init__(self, session: requests.Session):
        self.session = session

    def request(
        self,
        method: str,
        url: str,
        *,
        params: str | None = None,
        data: bytes | None = None,
        headers: Mapping[str, str],
        timeout: float | tuple[float, float],
        json: None = None,
        allow_redirects: bool = False,
        stream: bool = True,
    ) -> requests.Response:
        if json is not None or allow_redirects or not stream or not isinstance(params, str | None):
            raise TypeError("_ExactSession sends a body of bytes and a ready query string only")
        prepared = requests.PreparedRequest()
        prepared.method = method
        prepared.url = f"{url}?{params}" if params else url
        prepared.headers = CaseInsensitiveDict(headers)
        prepared.prepare_body(data, None)
        prepared.hooks = {"response": []}
        return self.session.get_adapter(prepared.url).send(
            prepared, stream=True, timeout=timeout, verify=self.session.verify, proxies={}
        )


class AuthApiClient:
    """Calls the auth backend's four endpoints and maps failures to exceptions.

    One instance per process (`get_client()`), thread-safe because it holds no
    per-user state. Subclass it and name the subclass in AUTH_CLIENT_CLASS to
    change what every call sends: override `extra_headers` (an API key, a
    tenant header).
    """

    def __init__(self):
        self.session = _session()

    def extra_headers(self) -> dict[str, str]:
        """Return headers added to every call (none by default)."""
        return {}

    # --- the endpoints -----------------------------------------------------

    def login(
        self, email: str, password: str, *, client_ip: str | None = None
    ) -> list[BackendCookie]:
        """Return the cookies of a successful sign-in.

        :raises InvalidCredentials: 400/401/403 from the backend.
        :raises Throttled: 429, with its Retry-After.
        """
        headers = {"X-Forwarded-For": client_ip} if client_ip else {}
        answer = self._call(
            "POST", conf.login_path, json={"email": email, "password": password}, headers=headers
        )
        if answer.status in (400, 401, 403):
            raise InvalidCredentials(f"POST {conf.login_path} answered {answer.status}")
        self._expect_success(answer, conf.login_path)
        issued = self._issued(answer, conf.login_path)
        self._expect_access_token(issued, conf.login_path)
        return issued

    def me(self, auth: "Tokens | TokenSource") -> UserProfile:
        """Return the profile the access token belongs to (401: renew and replay once).

        :raises AccessTokenRejected: with plain Tokens, the backend refused them.
        :raises SessionEnded: with a TokenSource, the backend refused it for good.
        """
        answer = self.request("GET", conf.me_path, auth=auth)
        if answer.status == 403 and not isinstance(auth, Tokens):
            auth.end("refused")
        if answer.status in (401, 403):
            raise AccessTokenRejected(f"GET {conf.me_path} answered {answer.status}")
        self._expect_success(answer, conf.me_path)
        return _profile(answer.data, conf.me_path)

    def refresh(self, refresh_token: str) -> list[BackendCookie]:
        """Spend `refresh_token`; return the cookies of the new pair.

        Runs with AUTH_REFRESH_TIMEOUT, far longer than a request waits: the
        single flight (accounts/refresh.py) keeps the answer when nobody waits.

        :raises RefreshRefused: 400/401/403, the token is no good.
        :raises BackendError: transient; `maybe_processed` says whether the
            backend may have spent the token without our seeing the answer.
        """
        # A new connection for every refresh, closed after it: one the backend
        # closed while idle in a pool would fail *after* sending, and a refresh
        # whose fate is unknown costs the user their session (accounts/refresh.py).
        # Its pool holds that one connection: urllib3 fills a new pool with a
        # slot per connection it may hold, and drains them all on closing.
        refresh_session = _session()
        _mount(refresh_session, 1)
        try:
            answer = self._call(
                "POST",
                conf.refresh_path,
                tokens=Tokens(refresh=refresh_token),
                attach="refresh",
                timeout=(conf.backend_connect_timeout, conf.refresh_timeout),
                session=refresh_session,
                headers={"Connection": "close"},
            )
        except Throttled as exc:
            raise BackendUnavailable(f"POST {conf.refresh_path} was throttled") from exc
        finally:
            refresh_session.close()
        if answer.status in (400, 401, 403):
            raise RefreshRefused(f"POST {conf.refresh_path} answered {answer.status}")
        try:
            self._expect_success(answer, conf.refresh_path)
            issued = self._issued(answer, conf.refresh_path)
            self._expect_access_token(issued, conf.refresh_path)
        except BackendProtocolError as exc:
            # A 2xx without a usable pair: the token may be spent all the same.
            exc.maybe_processed = True
            raise
        return issued

    def request(
        self,
        method: str,
        path: str,
        *,
        auth: "Tokens | TokenSource",
        params: str | Mapping | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        exact: bool = False,
    ) -> BackendAnswer:
        """Make an authenticated call; on 401 renew the tokens once and replay, body included.

        A request wrapper and a 401 interceptor in one place. A
        plain `Tokens` is sent as is and its 401 returned to the caller.
        With `exact` (the `/api/` proxy), `path` and a string `params` go out
        byte for byte (`_ExactSession`).
        """
        call = functools.partial(
            self._call,
            method,
            path,
            attach="access",
            params=params,
            data=body,
            headers=headers,
            session=_ExactSession(self.session) if exact else None,
        )
        if isinstance(auth, Tokens):
            return call(tokens=auth)
        answer = call(tokens=auth.tokens_for_call())
        if answer.status != 401:
            return answer
        logger.debug("%s %s answered 401; renewing the tokens and replaying once", method, path)
        answer = call(tokens=auth.renew_after_rejection())
        if answer.status == 401:
            auth.end("rejected_twice")
        return answer

    def logout(self, tokens: Tokens) -> list[BackendCookie]:
        """Revoke the tokens at the backend; return its (clearing) cookies."""
        answer = self._call("POST", conf.logout_path, tokens=tokens, attach="both")
        if answer.status == 401:
            return answer.cookies
        self._expect_success(answer, conf.logout_path)
        return answer.cookies

    def ping(self) -> int:
        """Return the status of a cheap unauthenticated call (for /healthz)."""
        return self._call("GET", conf.health_path, timeout=conf.health_timeout).status

    # --- plumbing ----------------------------------------------------------

    def _credentials(self, tokens: Tokens | None, attach: str) -> tuple[dict[str, str], dict]:
        """Return the headers and JSON fields that carry `tokens` (`attach`: which of them)."""
        if tokens is None:
            return {}, {}
        return token_credentials(
            usable_token(tokens.access),
            usable_token(tokens.refresh),
            attach,
            transport=conf.token_transport,
            access_cookie=conf.access_cookie,
            refresh_cookie=conf.refresh_cookie,
            refresh_field=conf.body_refresh_field,
        )

    def _call(
        self,
        method: str,
        path: str,
        *,
        tokens: Tokens | None = None,
        attach: str = "access",
        json: Any = None,
        data: bytes | None = None,
        params: str | Mapping | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | tuple[float, float] | None = None,
        session: requests.Session | None = None,
    ) -> BackendAnswer:
        started = time.monotonic()
        status: int | str = "error"  # no answer at all
        try:
            url = f"{conf.api_baseurl}{path}"
            token_headers, token_fields = self._credentials(tokens, attach)
            if token_fields:
                json = {**(json or {}), **token_fields}
            sent_at = time.time()
            try:
                response = (session or self.session).request(
                    method,
                    url,
                    json=json,
                    data=data,
                    params=params,
                    headers={
                        "Accept": "application/json",
                        **_request_id(),
                        **self.extra_headers(),
                        **(headers or {}),
                        **token_headers,
                    },
                    timeout=timeout or conf.backend_timeout,
                    allow_redirects=False,
                    stream=True,
                )
                status = response.status_code
                clock.observe(
                    response.headers.get("Date"), sent_at=sent_at, received_at=time.time()
                )
                content = _read_capped(response, conf.max_response_bytes, f"{method} {path}")
            except (requests.ConnectionError, requests.Timeout) as exc:
                failure = BackendUnavailable(f"{method} {path}: {type(exc).__name__}")
                failure.maybe_processed = not _never_sent(exc)
                raise failure from exc
            except requests.RequestException as exc:
                failure = BackendProtocolError(f"{method} {path}: {type(exc).__name__}")
                failure.maybe_processed = True
                raise failure from exc
            logger.debug("%s %s answered %s", method, path, response.status_code)
            if response.status_code >= 500:
                failure = BackendUnavailable(f"{method} {path} answered {response.status_code}")
                # A gateway that gave up may have left the call running behind it.
                failure.maybe_processed = response.status_code == 504
                raise failure
            if response.status_code == 429:
                raise Throttled(
                    f"{method} {path} answered 429",
                    retry_after=_retry_after(response.headers.get("Retry-After")),
                )
            return BackendAnswer(
                status=response.status_code,
                content=content,
                headers=response.headers,
                cookies=[
                    _on_local_clock(cookie)
                    for cookie in parse_set_cookies(response.raw.headers.getlist("Set-Cookie"))
                ],
            )
        finally:
            metrics.backend_call(_endpoint(path), status, time.monotonic() - started)

    @staticmethod
    def _expect_success(answer: BackendAnswer, path: str, allowed=(200, 201, 204)) -> None:
        if answer.status not in allowed:
            raise BackendProtocolError(f"{path} answered {answer.status}")

    @staticmethod
    def _expect_access_token(issued: list[BackendCookie], path: str) -> None:
        if not Tokens().updated_by(issued).access:
            where = (
                f"no usable {conf.body_access_field!r} in its JSON"
                if conf.token_transport == "body"  # noqa: S105 - a transport name
                else f"no usable {conf.access_cookie} cookie"
            )
            raise BackendProtocolError(f"POST {path} set {where}")

    @staticmethod
    def _issued(answer: BackendAnswer, path: str) -> list[BackendCookie]:
        """Return the tokens a login or refresh answer hands out, as cookies to relay."""
        if conf.token_transport != "body":  # noqa: S105 - a transport name
            return answer.cookies
        return _body_tokens(answer, path)


class AccessTokenRejected(BackendError):
    """`/users/me` refused plain Tokens (sign-in uses plain Tokens: nothing to renew)."""


def token_credentials(
    access: str | None,
    refresh: str | None,
    attach: str,
    *,
    transport: str,
    access_cookie: str,
    refresh_cookie: str,
    refresh_field: str,
) -> tuple[dict[str, str], dict]:
    """Return the headers and JSON fields that carry the tokens over `transport`.

    `attach` says which go out: `access`, `refresh` or `both`. The access token
    goes as a cookie (`cookie`) or as `Authorization: Bearer` (`bearer`,
    `body`); the refresh token as a cookie, or in the JSON body (`body`).
    """
    cookies, headers, fields = {}, {}, {}
    if attach in ("access", "both") and access:
        if transport in ("bearer", "body"):
            headers["Authorization"] = f"Bearer {access}"
        else:
            cookies[access_cookie] = access
    if attach in ("refresh", "both") and refresh:
        if transport == "body":  # noqa: S105 - a transport name
            fields[refresh_field] = refresh
        else:
            cookies[refresh_cookie] = refresh
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    return headers, fields


def _on_local_clock(cookie: BackendCookie) -> BackendCookie:
    """Return `cookie` with its `Expires` (the backend's clock) on this server's clock."""
    if cookie.expires is None or not clock.skew():
        return cookie
    return dataclasses.replace(cookie, expires=cookie.expires - timedelta(seconds=clock.skew()))


def _body_tokens(answer: BackendAnswer, path: str) -> list[BackendCookie]:
    """Return the tokens a JSON answer holds (body transport), as cookies to relay.

    Each lives as long as its JWT `exp` says (on this server's clock), else
    AUTH_BODY_ACCESS_LIFETIME / AUTH_BODY_REFRESH_LIFETIME. A value that
    cannot be a cookie's is refused: the app relays the tokens as cookies.

    :raises BackendProtocolError: not a JSON object, or a token field that is no string.
    """
    data = answer.data
    if not isinstance(data, dict):
        raise BackendProtocolError(f"POST {path} answered no JSON object")
    issued = []
    for field, name, lifetime in (
        (conf.body_access_field, conf.access_cookie, conf.body_access_lifetime),
        (conf.body_refresh_field, conf.refresh_cookie, conf.body_refresh_lifetime),
    ):
        value = data.get(field)
        if value is None:
            continue  # a refresh that does not rotate has no new refresh token
        if not isinstance(value, str) or not value or not COOKIE_VALUE.match(value):
            raise BackendProtocolError(f"POST {path} answered an unusable {field!r}")
        issued.append(BackendCookie(name, value, max_age=_lifetime(value, lifetime)))
    return issued


def _lifetime(token: str, default: int) -> int:
    exp = (access_token_claims(token) or {}).get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        # Rounded up: the record keeps the exact expiry (accounts/record.py); the
        # cookie only has to outlive it.
        return max(0, math.ceil(clock.local(float(exp)) - time.time()))
    return int(default)


def _read_capped(response: requests.Response, limit: int, what: str) -> bytes:
    """Read the body, refusing more than `limit` bytes (a backend gone wrong, not a DoS on us)."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        response.close()
        raise _answered_too_much(f"{what} answered {declared} bytes (limit {limit})")
    chunks, size = [], 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > limit:
            response.close()
            raise _answered_too_much(f"{what} answered more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _answered_too_much(message: str) -> BackendProtocolError:
    # The backend answered, so it may have acted on the call (spent a token).
    failure = BackendProtocolError(message)
    failure.maybe_processed = True
    return failure


def _profile(data: Any, path: str) -> UserProfile:
    """Validate a `/users/me` body into a UserProfile."""
    if not isinstance(data, dict):
        raise BackendProtocolError(f"{path} answered no JSON object")
    user_id, email, roles = data.get("id"), data.get("email"), data.get("roles", [])
    if isinstance(user_id, bool) or not isinstance(user_id, int | str) or str(user_id) == "":
        raise BackendProtocolError(f"{path} answered no usable id")
    if not isinstance(email, str) or not isinstance(roles, list):
        raise BackendProtocolError(f"{path} answered no usable email or roles")
    if not all(isinstance(role, str) for role in roles):
        raise BackendProtocolError(f"{path} answered roles that are not strings")
    first, last = data.get("firstName") or "", data.get("lastName") or ""
    return UserProfile(
        id=str(user_id)[:128],
        email=email,
        first_name=first if isinstance(first, str) else "",
        last_name=last if isinstance(last, str) else "",
        roles=tuple(roles),
    )


@functools.cache
def _client_for(dotted_path: str) -> AuthApiClient:
    return import_string(dotted_path)()


def get_client() -> AuthApiClient:
    """Return this process's client, of the class AUTH_CLIENT_CLASS names."""
    return _client_for(conf.client_class)


def _endpoint(path: str) -> str:
    """The metric label of a backend path: login, refresh, logout, me, health, or proxy."""
    names = {
        conf.login_path: "login",
        conf.refresh_path: "refresh",
        conf.logout_path: "logout",
        conf.me_path: "me",
        conf.health_path: "health",
    }
    return names.get(path, "proxy")


def _request_id() -> dict[str, str]:
    """`X-Request-ID` of the request being served (accounts/requestid.py), if any."""
    current = requestid.current()
    return {"X-Request-ID": current} if current else {}
