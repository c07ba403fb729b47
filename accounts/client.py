"""The one module that talks HTTP to the auth backend.

Everything server-side goes through `AuthApiClient`: a pooled
`requests.Session` (per process), a (connect, read) timeout on every call,
paths from settings, and failures translated into `accounts.exceptions` where
they meet the network, chained with `raise … from`.
"""

import functools
import logging
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from .conf import conf
from .cookies import BackendCookie, parse_set_cookies
from .exceptions import (
    BackendProtocolError,
    BackendUnavailable,
    InvalidCredentials,
    SessionExpired,
    Throttled,
)
from .models import UserProfile

logger = logging.getLogger(__name__)

DEFAULT_RETRY_AFTER = 60
MAX_JSON_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Tokens:
    """The token values one request holds (either may be missing)."""

    access: str | None = None
    refresh: str | None = None

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
    """A backend response reduced to what callers use: status, JSON, cookies."""

    status: int
    data: Any
    cookies: list[BackendCookie]


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

    def me(self, tokens: Tokens) -> UserProfile:
        """Return the profile the access token belongs to.

        :raises SessionExpired: 401/403.
        """
        answer = self._call("GET", conf.me_path, tokens=tokens, attach="access")
        if answer.status in (401, 403):
            raise SessionExpired(f"GET {conf.me_path} answered {answer.status}")
        self._expect_success(answer, conf.me_path)
        return _profile(answer.data, conf.me_path)

    def logout(self, tokens: Tokens) -> list[BackendCookie]:
        """Revoke the tokens at the backend; return its (clearing) cookies."""
        answer = self._call("POST", conf.logout_path, tokens=tokens, attach="both")
        self._expect_success(answer, conf.logout_path, allowed=(200, 201, 204, 401))
        return answer.cookies

    def ping(self) -> int:
        """Return the status of a cheap unauthenticated call (for /healthz)."""
        return self._call("GET", conf.health_path, timeout=conf.health_timeout).status

    # --- plumbing ----------------------------------------------------------

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

    def _call(
        self,
        method: str,
        path: str,
        *,
        tokens: Tokens | None = None,
        attach: str = "access",
        json: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | tuple[float, float] | None = None,
    ) -> BackendAnswer:
        url = f"{conf.api_baseurl}{path}"
        try:
            response = self.session.request(
                method,
                url,
                json=json,
                headers={
                    "Accept": "application/json",
                    **(headers or {}),
                    **self._headers(tokens, attach),
                },
                timeout=timeout or conf.backend_timeout,
                allow_redirects=False,
            )
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
            data=_json_or_none(response),
            cookies=parse_set_cookies(response.raw.headers.getlist("Set-Cookie")),
        )

    @staticmethod
    def _expect_success(answer: BackendAnswer, path: str, allowed=(200, 201, 204)) -> None:
        if answer.status not in allowed:
            raise BackendProtocolError(f"{path} answered {answer.status}")


def _json_or_none(response: requests.Response) -> Any:
    if len(response.content) > MAX_JSON_BYTES:
        return None
    try:
        return response.json()
    except ValueError:
        return None


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
