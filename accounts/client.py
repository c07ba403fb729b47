"""The one module that talks HTTP to the auth backend.

Everything server-side goes through `AuthApiClient`: a pooled
`requests.Session` (per process), a (connect, read) timeout on every call,
paths from settings, and failures translated into `accounts.exceptions` where
they meet the network, chained with `raise … from`.
"""

import functools
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import Any, Protocol

import requests
from django.views.decorators.debug import sensitive_variables
from requests.adapters import HTTPAdapter

from .conf import conf
from .cookies import BackendCookie, parse_set_cookies
from .exceptions import (
    BackendProtocolError,
    BackendUnavailable,
    InvalidCredentials,
    RefreshRejected,
    SessionExpired,
    Throttled,
)
from .models import UserProfile

logger = logging.getLogger(__name__)

DEFAULT_RETRY_AFTER = 60
MAX_JSON_BYTES = 1024 * 1024


@dataclass(frozen=True, repr=False)
class Tokens:
    """The token values one request holds (either may be missing).

    Its repr never shows them: not in logs, not in Django's debug page.
    """

    access: str | None = None
    refresh: str | None = None

    def __repr__(self) -> str:
        shown = {k: "<hidden>" if v else None for k, v in self.__dict__.items()}
        return f"Tokens(access={shown['access']}, refresh={shown['refresh']})"

    @classmethod
    def from_cookies(cls, cookies: dict[str, str]) -> "Tokens":
        return cls(
            access=cookies.get(conf.access_cookie) or None,
            refresh=cookies.get(conf.refresh_cookie) or None,
        )

    def updated_by(self, cookies: list[BackendCookie]) -> "Tokens":
        """Return these tokens with whatever `cookies` set or delete applied."""
        values = {conf.access_cookie: self.access, conf.refresh_cookie: self.refresh}
        for cookie in cookies:
            if cookie.name in values:
                values[cookie.name] = None if cookie.deletes else cookie.value
        return Tokens.from_cookies({k: v for k, v in values.items() if v})


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
    """Where authenticated calls get tokens, and how they renew them on a 401.

    `accounts.session.RequestAuth` is the one a request uses; a plain `Tokens`
    (no renewal) serves sign-in, which has just received its tokens.
    """

    tokens: Tokens

    def refresh(self) -> Tokens: ...


class _NoCookies(DefaultCookiePolicy):
    """Keep nothing in the shared session's jar: its tokens belong to one user."""

    def set_ok(self, cookie, request):
        return False


def _retry_after(value: str | None) -> int:
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER


class AuthApiClient:
    """Calls the auth backend's four endpoints and maps failures to exceptions.

    One instance per process (`get_client()`); it is thread-safe because it
    holds no per-user state. Subclass and override `_headers` to add what your
    backend needs (an API key, a tenant header).
    """

    def __init__(self, session: requests.Session | None = None):
        self.session = session or requests.Session()
        # The backend is a peer service, not the open web: no HTTP(S)_PROXY or
        # ~/.netrc look-ups on every call (requests reads both per request).
        self.session.trust_env = False
        self.session.cookies.set_policy(_NoCookies())
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=conf.pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

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
        if not any(c.name == conf.access_cookie and not c.deletes for c in answer.cookies):
            raise BackendProtocolError(f"POST {conf.login_path} set no {conf.access_cookie} cookie")
        return answer.cookies

    def me(self, auth: "Tokens | TokenSource") -> UserProfile:
        """Return the profile the access token belongs to.

        With a TokenSource a 401 refreshes and replays once (see `request`).

        :raises SessionExpired: 401/403 that a refresh did not cure.
        """
        answer = self.request("GET", conf.me_path, auth=auth)
        if answer.status == 403:
            raise SessionExpired(f"GET {conf.me_path} answered 403")
        self._expect_success(answer, conf.me_path)
        return _profile(answer.data, conf.me_path)

    @sensitive_variables()
    def refresh(self, refresh_token: str) -> list[BackendCookie]:
        """Spend `refresh_token`; return the cookies of the new pair.

        Runs with AUTH_REFRESH_TIMEOUT, longer than a request's wait budget:
        the single-flight service keeps the answer even when nobody waits.

        :raises RefreshRejected: 401/403, the token is no good (sign out).
        :raises BackendUnavailable: transient (never sign out for it).
        """
        try:
            answer = self._call(
                "POST",
                conf.refresh_path,
                tokens=Tokens(refresh=refresh_token),
                attach="refresh",
                timeout=(conf.backend_timeout[0], conf.refresh_timeout),
            )
        except Throttled as exc:
            raise BackendUnavailable(f"POST {conf.refresh_path} was throttled") from exc
        if answer.status in (400, 401, 403):
            raise RefreshRejected(f"POST {conf.refresh_path} answered {answer.status}")
        self._expect_success(answer, conf.refresh_path)
        if not any(c.name == conf.access_cookie and not c.deletes for c in answer.cookies):
            raise BackendProtocolError(
                f"POST {conf.refresh_path} set no {conf.access_cookie} cookie"
            )
        return answer.cookies

    @sensitive_variables()
    def request(
        self,
        method: str,
        path: str,
        *,
        auth: "Tokens | TokenSource",
        params: str | Mapping | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> BackendAnswer:
        """Make an authenticated call; on 401 refresh once and replay it, body included.

        The article's request wrapper and axios interceptor in one place.

        :raises SessionExpired: the replay answered 401 too, or the refresh was refused.
        """
        source = auth if not isinstance(auth, Tokens) else None
        tokens = auth if isinstance(auth, Tokens) else auth.tokens
        call = functools.partial(
            self._call, method, path, attach="access", params=params, data=body, headers=headers
        )
        answer = call(tokens=tokens)
        if answer.status != 401:
            return answer
        if source is None or not tokens.refresh:
            raise SessionExpired(f"{method} {path} answered 401")
        logger.debug("%s %s answered 401; refreshing and replaying once", method, path)
        answer = call(tokens=source.refresh())
        if answer.status == 401:
            raise SessionExpired(f"{method} {path} answered 401 after a refresh")
        return answer

    @sensitive_variables()
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

    @sensitive_variables()
    def _headers(self, tokens: Tokens | None, attach: str) -> dict[str, str]:
        if tokens is None:
            return {}
        cookies = {}
        headers = {}
        if attach in ("access", "both") and tokens.access:
            if conf.token_transport == "bearer":  # noqa: S105 - a transport name
                headers["Authorization"] = f"Bearer {tokens.access}"
            else:
                cookies[conf.access_cookie] = tokens.access
        if attach in ("refresh", "both") and tokens.refresh:
            cookies[conf.refresh_cookie] = tokens.refresh
        if cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        return headers

    @sensitive_variables()
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
    ) -> BackendAnswer:
        url = f"{conf.api_baseurl}{path}"
        try:
            response = self.session.request(
                method,
                url,
                json=json,
                data=data,
                params=params,
                headers={
                    "Accept": "application/json",
                    **(headers or {}),
                    **self._headers(tokens, attach),
                },
                timeout=timeout or conf.backend_timeout,
                allow_redirects=False,
                stream=True,
            )
            content = _read_capped(response, conf.max_response_bytes, f"{method} {path}")
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise BackendUnavailable(f"{method} {path}: {type(exc).__name__}") from exc
        except requests.RequestException as exc:
            raise BackendProtocolError(f"{method} {path}: {type(exc).__name__}") from exc
        logger.debug("%s %s answered %s", method, path, response.status_code)
        if response.status_code >= 500:
            raise BackendUnavailable(f"{method} {path} answered {response.status_code}")
        if response.status_code == 429:
            raise Throttled(
                f"{method} {path} answered 429",
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
        return BackendAnswer(
            status=response.status_code,
            content=content,
            headers=response.headers,
            cookies=parse_set_cookies(response.raw.headers.getlist("Set-Cookie")),
        )

    @staticmethod
    def _expect_success(answer: BackendAnswer, path: str, allowed=(200, 201, 204)) -> None:
        if answer.status not in allowed:
            raise BackendProtocolError(f"{path} answered {answer.status}")


def _read_capped(response: requests.Response, limit: int, what: str) -> bytes:
    """Read the body, refusing more than `limit` bytes (a backend gone wrong, not a DoS on us)."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        response.close()
        raise BackendProtocolError(f"{what} answered {declared} bytes (limit {limit})")
    chunks, size = [], 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > limit:
            response.close()
            raise BackendProtocolError(f"{what} answered more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


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
def get_client() -> AuthApiClient:
    """Return this process's client (one connection pool per process)."""
    return AuthApiClient()
