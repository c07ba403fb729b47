"""The one module that talks HTTP to the auth backend.

Everything server-side goes through `AuthApiClient` (or the subclass named by
AUTH_CLIENT_CLASS): a pooled `requests.Session` per process, a (connect, read)
timeout on every call, paths from settings, and failures translated into
`accounts.exceptions` where they meet the network, chained with `raise … from`.
"""

import contextlib
import dataclasses
import functools
import json
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from http.cookiejar import DefaultCookiePolicy
from typing import Any, NamedTuple, NoReturn, Protocol

import requests
from django.utils.module_loading import import_string
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from . import clock, requestid, signals
from .conf import conf
from .cookies import COOKIE_VALUE, BackendCookie, parse_set_cookies
from .exceptions import (
    BackendError,
    BackendProtocolError,
    BackendUnavailable,
    InvalidCredentials,
    ShapeMismatch,
    Throttled,
    TokensRefused,
)
from .models import UserProfile
from .reasons import Reason
from .shape import (
    BEARER,
    COOKIE,
    HEADER,
    JSON,
    MISSING,
    Place,
    UnreadableRoles,
    lookup,
    outline,
    paths,
    put,
    role_names,
    roles_candidates,
)

# Tokens and usable_token live in accounts/tokens.py; imported here for callers of the
# adapter API (docs/adapter.md), which name them from the client.
from .tokens import TOKEN_VALUE, Tokens, access_token_claims, usable_token  # noqa: F401

logger = logging.getLogger(__name__)

DEFAULT_RETRY_AFTER = 60
MAX_JSON_BYTES = 1024 * 1024
class RefreshRefused(Exception):
    """The backend refused a refresh token (400/401/403): that sign-in is over."""


@dataclass(frozen=True)
class BackendAnswer:
    """A backend response reduced to what callers use."""

    status: int
    content: bytes
    headers: Mapping[str, str]
    cookies: list[BackendCookie]
    what: str = "the backend"  # "POST /auth/login", for messages
    set_cookie_headers: tuple[str, ...] = ()  # as sent, one per header (authcheck reads them)

    @functools.cached_property
    def data(self) -> Any:
        """The body as JSON, or None when it is not JSON (or too large to be).

        Parsed once: `/users/me`'s answer is read by `rejected` and `profile_from`.
        """
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

    tokens: Tokens  # the current pair, as the last call used it

    def tokens_for_call(self) -> Tokens: ...

    def renew_after_rejection(self) -> Tokens: ...

    def refused_after_renewal(self) -> NoReturn:
        """The renewed pair was refused too: raise what that means (`TokensRefused`, or a
        `BackendError` when the backend only answered too late for the new token)."""


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
    """A stand-in for the backend session in `call` that sends the URL exactly as built.

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
    per-user state. What a backend looks like is declared in settings
    (accounts/shape.py); for what settings cannot say, subclass it, name the
    subclass in AUTH_CLIENT_CLASS and override the public methods of its
    adapter API (docs/adapter.md): `extra_headers`, `credentials`,
    `tokens_from`, `profile_from`, `rejected` and `login_refused`.
    """

    def __init__(self):
        self.session = _session()

    # --- the adapter API: override these, nothing else (docs/adapter.md) -------

    def extra_headers(self) -> dict[str, str]:
        """Return headers added to every call (none by default): an API key, a tenant."""
        return {}

    def credentials(self, tokens: Tokens, call: str) -> "Credentials":
        """Return the headers and JSON fields that carry `tokens` on `call`.

        `call` is `access` (`/users/me` and the proxy), `refresh` or `logout`;
        where each token goes is AUTH_ACCESS_TOKEN_TO, AUTH_REFRESH_TOKEN_TO
        and their AUTH_LOGOUT_* variants (accounts/shape.py).
        """
        shape = conf.shape
        places = {
            "access": ((shape.access_to, tokens.access),),
            "refresh": ((shape.refresh_to, tokens.refresh),),
            "logout": (
                (shape.logout_access_to, tokens.access),
                (shape.logout_refresh_to, tokens.refresh),
            ),
        }[call]
        return carry(places)

    def tokens_from(self, answer: "BackendAnswer", call: str) -> list[BackendCookie]:
        """Return the tokens a sign-in or refresh answer (`call`: `login`, `refresh`) hands out.

        As the app's own cookies (AUTH_ACCESS_COOKIE, AUTH_REFRESH_COOKIE),
        read from where AUTH_ACCESS_TOKEN_FROM and AUTH_REFRESH_TOKEN_FROM say.
        A token from JSON lives as long as its JWT `exp` says, else
        AUTH_BODY_ACCESS_LIFETIME / AUTH_BODY_REFRESH_LIFETIME; one from a
        cookie as long as the cookie (`Max-Age`, else `Expires`).

        :raises BackendProtocolError: a token where JSON was expected that is
            not a string a cookie can hold, or no JSON object at all.
        """
        shape = conf.shape
        issued: list[BackendCookie] = []
        for place, name, lifetime in (
            (shape.access_from, conf.access_cookie, conf.body_access_lifetime),
            (shape.refresh_from, conf.refresh_cookie, conf.body_refresh_lifetime),
        ):
            if place.kind == COOKIE:
                issued += [
                    dataclasses.replace(cookie, name=name)
                    for cookie in answer.cookies
                    if cookie.name == place.name
                ]
                continue
            data = answer.data
            if not isinstance(data, dict):
                raise BackendProtocolError(
                    f"{answer.what} answered no JSON object, and {place} is where the "
                    f"{_which(name)} token should be"
                )
            value = lookup(data, place.name)
            if value is MISSING or value is None:
                continue  # a refresh that does not rotate has no new refresh token
            if not isinstance(value, str) or not value or not COOKIE_VALUE.match(value):
                raise BackendProtocolError(
                    f"{answer.what} answered an unusable {_which(name)} token at {place}: "
                    f"{outline(value)}"
                )
            issued.append(BackendCookie(name, value, max_age=_lifetime(value, lifetime)))
        return issued

    def profile_from(self, data: Any, *, access_token: str | None = None) -> UserProfile:
        """Return who `/users/me`'s JSON (and, with AUTH_ROLES_FROM=token, the token) says.

        :raises BackendProtocolError: no id, email or roles where the
            AUTH_ME_* settings say; the message names what was found instead.
        """
        path = conf.me_path
        if not isinstance(data, dict):
            raise BackendProtocolError(f"GET {path} answered no JSON object")
        user_id = lookup(data, conf.me_id_path)
        if isinstance(user_id, bool) or not isinstance(user_id, int | str) or str(user_id) == "":
            raise ShapeMismatch(
                f"GET {path} answered no usable id at {conf.me_id_path!r}",
                "AUTH_ME_ID_PATH",
                _candidates(data, ("id", "_id", "uuid", "sub")),
                data,
            )
        email = lookup(data, conf.me_email_path)
        if not isinstance(email, str):
            raise ShapeMismatch(
                f"GET {path} answered no email at {conf.me_email_path!r}",
                "AUTH_ME_EMAIL_PATH",
                _candidates(data, ("email", "mail", "username")),
                data,
            )
        first = lookup(data, conf.me_first_name_path)
        last = lookup(data, conf.me_last_name_path)
        return UserProfile(
            id=str(user_id)[:128],
            email=email,
            first_name=first if isinstance(first, str) else "",
            last_name=last if isinstance(last, str) else "",
            roles=self._roles(data, access_token),
        )

    def rejected(self, answer: "BackendAnswer", path: str) -> bool:
        """Return whether an authenticated call's answer means "this access token is not taken".

        A 401; or a `/users/me` answering 200 without an id, as backends do
        that answer a guest for a token they do not accept.
        """
        if answer.status == 401:
            return True
        if path != conf.me_path or answer.status != 200:
            return False
        data = answer.data
        if not isinstance(data, dict):
            return False
        user_id = lookup(data, conf.me_id_path)
        return user_id is MISSING or user_id is None or user_id == ""

    def login_refused(self, answer: "BackendAnswer") -> bool:
        """Return whether a sign-in answer means a wrong email or password.

        Its status is one of AUTH_LOGIN_INVALID_STATUSES (400, 401, 403, 422).
        """
        return answer.status in conf.shape.invalid_login_statuses

    # --- the endpoints -----------------------------------------------------

    def login(
        self, email: str, password: str, *, client_ip: str | None = None
    ) -> list[BackendCookie]:
        """Return the tokens of a successful sign-in, as the app's cookies.

        :raises InvalidCredentials: a status of AUTH_LOGIN_INVALID_STATUSES.
        :raises Throttled: 429, with its Retry-After.
        :raises BackendProtocolError: anything else that is no pair of tokens.
        """
        headers = {"X-Forwarded-For": client_ip} if client_ip else {}
        answer = self.call(
            "POST",
            conf.login_path,
            json={"email": email, "password": password},
            headers=headers,
            endpoint="login",
        )
        if self.login_refused(answer):
            raise InvalidCredentials(f"POST {conf.login_path} answered {answer.status}")
        self._expect_success(answer, conf.login_path)
        issued = self.tokens_from(answer, "login")
        tokens = Tokens().updated_by(issued)
        if not tokens.access or not tokens.refresh:
            if tokens.access or tokens.refresh:
                with contextlib.suppress(BackendError):
                    self.logout(tokens)  # nothing of it will be used
            raise _no_pair(answer, tokens)
        return issued

    def me(self, auth: "Tokens | TokenSource") -> UserProfile:
        """Return the profile the access token belongs to (rejected: renew and replay once).

        :raises AccessTokenRejected: with plain Tokens, the backend refused them.
        :raises TokensRefused: with a TokenSource, the backend refused it for good.
        """
        answer = self.request("GET", conf.me_path, auth=auth, endpoint="me")
        if answer.status == 403 and not isinstance(auth, Tokens):
            raise TokensRefused(Reason.REFUSED)
        if answer.status == 403 or self.rejected(answer, conf.me_path):
            raise AccessTokenRejected(_rejection(answer))
        self._expect_success(answer, conf.me_path, allowed=(200,))
        access = (auth if isinstance(auth, Tokens) else auth.tokens).access
        return self.profile_from(answer.data, access_token=access)

    def refresh(self, refresh_token: str) -> list[BackendCookie]:
        """Spend `refresh_token`; return the new tokens, as the app's cookies.

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
            answer = self.call(
                "POST",
                conf.refresh_path,
                tokens=Tokens(refresh=refresh_token),
                attach="refresh",
                timeout=(conf.backend_connect_timeout, conf.refresh_timeout),
                session=refresh_session,
                headers={"Connection": "close"},
                endpoint="refresh",
            )
        except Throttled as exc:
            raise BackendUnavailable(f"POST {conf.refresh_path} was throttled") from exc
        finally:
            refresh_session.close()
        if answer.status in (400, 401, 403):
            raise RefreshRefused(f"POST {conf.refresh_path} answered {answer.status}")
        try:
            self._expect_success(answer, conf.refresh_path)
            issued = self.tokens_from(answer, "refresh")
            if not Tokens().updated_by(issued).access:
                raise _no_pair(answer, Tokens().updated_by(issued))
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
        endpoint: str = "proxy",
    ) -> "BackendAnswer":
        """Make an authenticated call; when `rejected`, renew the tokens once and replay it.

        A request wrapper and a 401 interceptor in one place. A
        plain `Tokens` is sent as is and its 401 returned to the caller; a
        `TokenSource` refused again after its renewal raises what the source
        says that means (`TokensRefused`: the caller ends the session; this
        client ends nothing).
        With `exact` (the `/api/` proxy), `path` and a string `params` go out
        byte for byte (`_ExactSession`). `endpoint` labels its metrics.
        """
        call = functools.partial(
            self.call,
            method,
            path,
            attach="access",
            params=params,
            data=body,
            headers=headers,
            session=_ExactSession(self.session) if exact else None,
            endpoint=endpoint,
        )
        if isinstance(auth, Tokens):
            return call(tokens=auth)
        # The proxy relays what the backend says, a guest answer included; only
        # the app's own `/users/me` takes one for "the token was not taken".
        path_judged = "" if exact else path
        answer = call(tokens=auth.tokens_for_call())
        if not self.rejected(answer, path_judged):
            return answer
        logger.debug(
            "%s %s: access token not taken; renewing the tokens and replaying once", method, path
        )
        answer = call(tokens=auth.renew_after_rejection())
        if self.rejected(answer, path_judged):
            auth.refused_after_renewal()
        return answer

    def logout(self, tokens: Tokens) -> list[BackendCookie]:
        """Revoke the tokens at the backend; return its (clearing) cookies."""
        answer = self.call(
            "POST", conf.logout_path, tokens=tokens, attach="logout", endpoint="logout"
        )
        if answer.status == 401:
            return answer.cookies
        self._expect_success(answer, conf.logout_path)
        return answer.cookies

    def ping(self) -> int:
        """Return the status of a cheap unauthenticated call (the probe: accounts/ops/health.py)."""
        return self.call(
            "GET", conf.health_path, timeout=conf.health_timeout, endpoint="health"
        ).status

    # --- plumbing ----------------------------------------------------------

    def token_roles(self, access_token: str | None) -> tuple[str, ...]:
        """Return the roles an access token the backend issued carries (AUTH_ROLES_FROM=token).

        :raises ShapeMismatch: no JWT, or no roles at AUTH_TOKEN_ROLES_CLAIM.
        """
        return self._roles({}, access_token, from_token=True)

    def _roles(self, data: dict, access_token: str | None, *, from_token=None) -> tuple[str, ...]:
        if from_token or (from_token is None and conf.roles_from == "token"):
            claims = access_token_claims(access_token)
            if claims is None:
                raise ShapeMismatch(
                    "the access token is no JWT to read roles from (AUTH_ROLES_FROM=token)",
                    "AUTH_ROLES_FROM",
                    ["me"] if roles_candidates(data) else [],
                )
            source, where, setting = (
                claims,
                f"the access token's {conf.token_roles_claim!r} claim",
                "AUTH_TOKEN_ROLES_CLAIM",
            )
            value = lookup(claims, conf.token_roles_claim)
        else:
            source, where, setting = (
                data,
                f"GET {conf.me_path}'s {conf.me_roles_path!r}",
                "AUTH_ME_ROLES_PATH",
            )
            value = lookup(data, conf.me_roles_path)
        if value is MISSING:
            raise ShapeMismatch(
                f"{where} holds no roles", setting, roles_candidates(source), source
            )
        if value is None:
            return ()
        try:
            return role_names(value, name_key=conf.role_name_key)
        except UnreadableRoles as exc:
            raise ShapeMismatch(
                f"{where} holds roles of no known shape: {exc}",
                "AUTH_ROLE_NAME_KEY" if isinstance(value, Mapping | list) else setting,
                [],
                source,
            ) from exc

    def _credentials(self, tokens: Tokens | None, attach: str) -> "Credentials":
        if tokens is None:
            return Credentials({}, {})
        usable = Tokens(access=usable_token(tokens.access), refresh=usable_token(tokens.refresh))
        return self.credentials(usable, attach)

    def call(
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
        endpoint: str | None = None,
    ) -> "BackendAnswer":
        """Make one call, `tokens` placed as `credentials(tokens, attach)` puts them.

        No renewal and no judgement of the answer but the network's: 5xx and
        no answer raise BackendUnavailable, 429 Throttled; any other answer
        comes back. `authcheck` calls the backend through this too.

        `endpoint` labels the call's metrics by its purpose (login, refresh,
        logout, me, health, proxy): the paths may be equal (AUTH_HEALTH_PATH
        is AUTH_ME_PATH by default). Without it the path is looked up.
        """
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
            set_cookies = tuple(response.raw.headers.getlist("Set-Cookie"))
            return BackendAnswer(
                status=response.status_code,
                content=content,
                headers=response.headers,
                cookies=[_on_local_clock(cookie) for cookie in parse_set_cookies(set_cookies)],
                what=f"{method} {path}",
                set_cookie_headers=set_cookies,
            )
        finally:
            label = endpoint or _endpoint(path)
            signals.backend_call(label, status, time.monotonic() - started)

    @staticmethod
    def _expect_success(answer: "BackendAnswer", path: str, allowed=(200, 201, 204)) -> None:
        if answer.status in allowed:
            return
        setting = _path_setting(path)
        if answer.status == 404 and setting:
            raise BackendProtocolError(
                f"{answer.what} answered 404: is {setting} the backend's path?"
            )
        raise BackendProtocolError(f"{answer.what} answered {answer.status}")


class AccessTokenRejected(ShapeMismatch):
    """`/users/me` refused plain Tokens (sign-in uses plain Tokens: nothing to renew).

    Tokens just issued and refused at once: the app sends them where the
    backend does not look (AUTH_ACCESS_TOKEN_TO), or AUTH_ME_PATH is not
    the backend's profile.
    """

    def __init__(self, what: str):
        super().__init__(what, "AUTH_ACCESS_TOKEN_TO")


class Credentials(NamedTuple):
    """What carries tokens on one call: request headers and top-level JSON fields."""

    headers: dict[str, str]
    fields: dict[str, Any]


def carry(places: Iterable[tuple[Place, str | None]]) -> Credentials:
    """Return the headers and JSON fields that put each token at its place (`none`: nowhere)."""
    cookies, headers, fields = {}, {}, {}
    for place, token in places:
        if not token:
            continue
        if place.kind == COOKIE:
            cookies[place.name] = token
        elif place.kind == BEARER:
            headers["Authorization"] = f"Bearer {token}"
        elif place.kind == HEADER:
            headers[place.name] = token
        elif place.kind == JSON:
            fields = put(fields, place.name, token)
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    return Credentials(headers, fields)


def _path_setting(path: str) -> str | None:
    for setting, attr in (
        ("AUTH_LOGIN_PATH", "login_path"),
        ("AUTH_REFRESH_PATH", "refresh_path"),
        ("AUTH_LOGOUT_PATH", "logout_path"),
        ("AUTH_ME_PATH", "me_path"),
    ):
        if getattr(conf, attr) == path:
            return setting
    return None


def _which(cookie_name: str) -> str:
    return "access" if cookie_name == conf.access_cookie else "refresh"


def found_in(answer: BackendAnswer) -> str:
    """What an answer held, names and types only: its cookies and its JSON's outline."""
    names = sorted({cookie.name for cookie in answer.cookies if not cookie.deletes})
    cookies = f"cookies {', '.join(names)}" if names else "no cookies"
    data = answer.data
    body = f"JSON {outline(data)}" if data is not None else f"{len(answer.content)} bytes, not JSON"
    return f"{cookies} and {body}"


def _no_pair(answer: BackendAnswer, tokens: Tokens) -> ShapeMismatch:
    shape = conf.shape
    if not tokens.access:
        place, setting = shape.access_from, "AUTH_ACCESS_TOKEN_FROM"
    else:
        place, setting = shape.refresh_from, "AUTH_REFRESH_TOKEN_FROM"
    which = "access" if setting == "AUTH_ACCESS_TOKEN_FROM" else "refresh"
    return ShapeMismatch(
        f"{answer.what} answered {answer.status} with no usable {which} token at {place}; "
        f"it held {found_in(answer)}",
        setting,
        token_places(answer, which),
    )


def token_places(answer: BackendAnswer, which: str) -> list[str]:
    """Places in an answer that may hold the `which` (access, refresh) token, best first."""
    words = ("refresh",) if which == "refresh" else ("access", "token", "jwt")
    found = []
    for cookie in answer.cookies:
        lowered = cookie.name.lower()
        if any(w in lowered for w in words) and (which == "refresh") == ("refresh" in lowered):
            found.append(f"cookie:{cookie.name}")
    data = answer.data
    for path, value in paths(data) if isinstance(data, dict) else ():
        last = path.rsplit(".", 1)[-1].lower()
        if not isinstance(value, str) or not any(w in last for w in words):
            continue
        if (which == "refresh") == ("refresh" in last) and "expire" not in last:
            found.append(f"json:{path}")
    return found


def _rejection(answer: BackendAnswer) -> str:
    if answer.status != 200:
        return f"{answer.what} answered {answer.status}"
    return (
        f"{answer.what} answered 200 without an id at {conf.me_id_path!r} (a guest answer): the "
        f"backend did not take the access token sent as {conf.shape.access_to}"
    )


def _candidates(data: dict, words: tuple[str, ...]) -> list[str]:
    found = []
    for path, value in paths(data):
        last = path.rsplit(".", 1)[-1].lower()
        if isinstance(value, str | int) and not isinstance(value, bool) and last in words:
            found.append(path)
    return sorted(found, key=lambda p: p.count("."))


def _on_local_clock(cookie: BackendCookie) -> BackendCookie:
    """Return `cookie` with its `Expires` (the backend's clock) on this server's clock."""
    if cookie.expires is None or not clock.skew():
        return cookie
    return dataclasses.replace(cookie, expires=cookie.expires - timedelta(seconds=clock.skew()))


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


@functools.cache
def _client_for(dotted_path: str) -> AuthApiClient:
    return import_string(dotted_path)()


def get_client() -> AuthApiClient:
    """Return this process's client, of the class AUTH_CLIENT_CLASS names."""
    return _client_for(conf.client_class)


def _endpoint(path: str) -> str:
    """The metric label of a call that gave none, by its path; "me" where health's is the same."""
    names = {
        conf.health_path: "health",
        conf.login_path: "login",
        conf.refresh_path: "refresh",
        conf.logout_path: "logout",
        conf.me_path: "me",
    }
    return names.get(path, "proxy")


def _request_id() -> dict[str, str]:
    """`X-Request-ID` of the request being served (accounts/requestid.py), if any."""
    current = requestid.current()
    return {"X-Request-ID": current} if current else {}
