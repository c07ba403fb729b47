"""Every accounts setting, defined once: its name, default, type and meaning.

`SETTINGS` is the one list. `config/settings/base.py` fills each from the
environment (`Setting.from_env`); `conf.<attr>` reads `django.conf.settings`
when used, falling back to the default, so `override_settings` and pytest's
`settings` fixture just work. The settings reference, docs/settings.md, is
generated from this list (scripts/mkdocs_hooks.py; tests/test_docs.py builds it).
"""

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    attr: str

    def from_env(self, env) -> Any:
        """Return this setting read from a django-environ `env`, or its default."""
        if isinstance(self.default, bool):
            return env.bool(self.name, default=self.default)
        if isinstance(self.default, int):
            return env.int(self.name, default=self.default)
        if isinstance(self.default, float):
            return env.float(self.name, default=self.default)
        if isinstance(self.default, list | tuple):
            return env.list(self.name, default=list(self.default))
        return env.str(self.name, default=self.default)

    @property
    def shown_default(self) -> str:
        """The default as the settings reference (docs/settings.md) writes it."""
        if self.default is None:
            return "unset"
        if isinstance(self.default, bool):
            return str(self.default)
        if isinstance(self.default, list | tuple):
            return ",".join(self.default)
        return str(self.default)


SETTINGS = (
    # The backend and its paths
    Setting("API_BASEURL", "http://127.0.0.1:8001", "the auth backend", "api_baseurl_raw"),
    Setting("AUTH_LOGIN_PATH", "/auth/login", "the backend's sign-in path", "login_path"),
    Setting("AUTH_REFRESH_PATH", "/auth/refresh", "the backend's refresh path", "refresh_path"),
    Setting("AUTH_LOGOUT_PATH", "/auth/logout", "the backend's sign-out path", "logout_path"),
    Setting("AUTH_ME_PATH", "/users/me", "the backend's profile path", "me_path"),
    Setting(
        "AUTH_HEALTH_PATH",
        "/users/me",
        "what `/healthz` calls (any answer below 500 counts as up)",
        "health_path",
    ),
    Setting(
        "AUTH_ACCESS_COOKIE", "access_token", "the access token's cookie name", "access_cookie"
    ),
    Setting(
        "AUTH_REFRESH_COOKIE", "refresh_token", "the refresh token's cookie name", "refresh_cookie"
    ),
    Setting(
        "AUTH_BACKEND_TOKEN_TRANSPORT",
        "cookie",
        "`cookie`: the backend sets and reads token cookies; `bearer`: the same, but the "
        "access token goes out as `Authorization: Bearer`; `body`: login and refresh answer "
        "the tokens in JSON, the access token goes out as `Bearer`, the refresh token in the "
        "JSON body of refresh and logout",
        "token_transport",
    ),
    Setting(
        "AUTH_BODY_ACCESS_FIELD",
        "accessToken",
        "with `body` transport, the JSON field that holds the access token (dotted for nested)",
        "body_access_field",
    ),
    Setting(
        "AUTH_BODY_REFRESH_FIELD",
        "refreshToken",
        "with `body` transport, the JSON field that holds the refresh token (dotted for nested)",
        "body_refresh_field",
    ),
    Setting(
        "AUTH_BODY_ACCESS_LIFETIME",
        1800,
        "seconds an access token from JSON lives when it is no JWT with `exp`",
        "body_access_lifetime",
    ),
    Setting(
        "AUTH_BODY_REFRESH_LIFETIME",
        604800,
        "seconds a refresh token from JSON lives when it is no JWT with `exp`",
        "body_refresh_lifetime",
    ),
    # The backend's shape, declared (accounts/shape.py; docs/backends.md).
    # Empty: follow AUTH_BACKEND_TOKEN_TRANSPORT and the cookie and field names above.
    Setting(
        "AUTH_ACCESS_TOKEN_FROM",
        "",
        "where sign-in and refresh answers hold the access token: `cookie:<name>` or "
        "`json:<dotted.path>`",
        "access_token_from",
    ),
    Setting(
        "AUTH_REFRESH_TOKEN_FROM",
        "",
        "where sign-in and refresh answers hold the refresh token: `cookie:<name>` or "
        "`json:<dotted.path>`",
        "refresh_token_from",
    ),
    Setting(
        "AUTH_ACCESS_TOKEN_TO",
        "",
        "how the access token goes out on `/users/me`, the proxy and sign-out: "
        "`cookie:<name>`, `bearer` or `header:<name>` (empty: like it came, `bearer` for JSON)",
        "access_token_to",
    ),
    Setting(
        "AUTH_REFRESH_TOKEN_TO",
        "",
        "how the refresh token goes out on refresh: `cookie:<name>`, `bearer`, "
        "`header:<name>` or `json:<dotted.path>` (empty: like it came)",
        "refresh_token_to",
    ),
    Setting(
        "AUTH_LOGOUT_ACCESS_TOKEN_TO",
        "",
        "how the access token goes out on sign-out, or `none` (empty: as AUTH_ACCESS_TOKEN_TO)",
        "logout_access_token_to",
    ),
    Setting(
        "AUTH_LOGOUT_REFRESH_TOKEN_TO",
        "",
        "how the refresh token goes out on sign-out, or `none` (empty: as "
        "AUTH_REFRESH_TOKEN_TO, unless the access token takes the same header)",
        "logout_refresh_token_to",
    ),
    Setting(
        "AUTH_LOGIN_INVALID_STATUSES",
        ["400", "401", "403", "422"],
        "sign-in answers that mean a wrong email or password (429 is always throttling)",
        "login_invalid_statuses_list",
    ),
    Setting("AUTH_ME_ID_PATH", "id", "where `/users/me` keeps the user's id", "me_id_path"),
    Setting("AUTH_ME_EMAIL_PATH", "email", "where `/users/me` keeps the email", "me_email_path"),
    Setting(
        "AUTH_ME_FIRST_NAME_PATH",
        "firstName",
        "where `/users/me` keeps the first name (optional)",
        "me_first_name_path",
    ),
    Setting(
        "AUTH_ME_LAST_NAME_PATH",
        "lastName",
        "where `/users/me` keeps the last name (optional)",
        "me_last_name_path",
    ),
    Setting(
        "AUTH_ME_ROLES_PATH",
        "roles",
        "where `/users/me` keeps the roles: a list of names, one name, an object with a "
        "name, a list of such objects, or a map of name to true",
        "me_roles_path",
    ),
    Setting(
        "AUTH_ROLE_NAME_KEY",
        "name",
        'the key that names a role given as an object (`{"id": 1, "name": "Admin"}`)',
        "role_name_key",
    ),
    Setting(
        "AUTH_ROLES_FROM",
        "me",
        "`me`: roles from `/users/me`; `token`: from the access token's claims (a refresh "
        "then needs no `/users/me` call)",
        "roles_from",
    ),
    Setting(
        "AUTH_TOKEN_ROLES_CLAIM",
        "roles",
        "with AUTH_ROLES_FROM=token, the access token claim (dotted path) that holds the roles",
        "token_roles_claim",
    ),
    Setting(
        "AUTH_ROLES_CASE_INSENSITIVE",
        False,
        "match role names regardless of case (`Admin` is `admin`)",
        "roles_case_insensitive",
    ),
    Setting(
        "AUTH_CLIENT_CLASS",
        "accounts.client.AuthApiClient",
        "dotted path of the backend client class (docs/adapter.md: what settings cannot say)",
        "client_class",
    ),
    # Who may sign in
    Setting(
        "AUTH_ALLOWED_ROLES",
        ["admin", "evaluator"],
        "accounts sharing none of these roles are refused",
        "allowed_roles_list",
    ),
    Setting(
        "AUTH_SUPERUSER_ROLES",
        ["admin"],
        "roles that make the mirrored user staff and superuser",
        "superuser_roles_list",
    ),
    Setting(
        "AUTH_OPS_ROLES",
        ["admin"],
        "roles that may open the health page of the operations app (`accounts.ops`)",
        "ops_roles_list",
    ),
    # The token cookies on the app's origin
    Setting(
        "AUTH_COOKIE_DOMAIN",
        None,
        "`Domain` of the token cookies (the backend's is dropped)",
        "cookie_domain_raw",
    ),
    Setting(
        "AUTH_COOKIE_PATH",
        "/",
        "`Path` of the token cookies, whatever path the backend wrote",
        "cookie_path",
    ),
    Setting(
        "AUTH_COOKIE_SECURE",
        True,
        "`Secure` flag of the token cookies (False in dev settings)",
        "cookie_secure",
    ),
    Setting(
        "AUTH_COOKIE_SAMESITE", "Lax", "`SameSite` of the token cookies", "cookie_samesite_raw"
    ),
    # Refresh
    Setting(
        "AUTH_REFRESH_LEEWAY",
        60,
        "refresh this many seconds before the access token expires (at most half its life)",
        "refresh_leeway",
    ),
    Setting(
        "AUTH_REFRESH_WAIT",
        5.0,
        "seconds one request may wait for refreshes in all, then 503",
        "refresh_wait",
    ),
    Setting(
        "AUTH_REFRESH_TIMEOUT",
        120.0,
        "seconds the background refresh call waits for the backend",
        "refresh_timeout",
    ),
    Setting(
        "AUTH_REFRESH_LOCK_TTL",
        5,
        "seconds a refresh in flight stays marked alive without renewal",
        "refresh_lock_ttl",
    ),
    Setting(
        "AUTH_REFRESH_POOL_SIZE",
        32,
        "threads per process that make refresh calls",
        "refresh_pool_size",
    ),
    Setting(
        "AUTH_REFRESH_GRACE",
        20,
        "seconds any holder of a spent refresh token may collect its result",
        "refresh_grace",
    ),
    Setting(
        "AUTH_REVALIDATE_INTERVAL",
        300,
        "seconds between re-reads of a signed-in user from the backend",
        "revalidate_interval",
    ),
    Setting(
        "AUTH_EXEMPT_URLS",
        [],
        "URL names the token middleware leaves alone, besides the views marked "
        "`token_exempt` (sign-out, `/healthz`: accounts/decorators.py)",
        "exempt_urls",
    ),
    # Calls to the backend
    Setting(
        "AUTH_BACKEND_TIMEOUT", 5.0, "read timeout of every backend call", "backend_read_timeout"
    ),
    Setting(
        "AUTH_BACKEND_CONNECT_TIMEOUT",
        2.0,
        "connect timeout of every backend call",
        "backend_connect_timeout",
    ),
    Setting(
        "AUTH_HEALTH_TIMEOUT",
        2.0,
        "seconds the backend probe waits (`/healthz`, the health page)",
        "health_timeout",
    ),
    Setting("AUTH_BACKEND_POOL_SIZE", 20, "pooled connections to the backend", "pool_size"),
    Setting(
        "AUTH_BACKEND_MAX_RESPONSE_BYTES",
        2 * 1024 * 1024,
        "the most the app reads of one backend answer",
        "max_response_bytes",
    ),
    Setting(
        "AUTH_PROXY_PREFIXES",
        ["users/"],
        "backend paths `/api/<path>` may reach",
        "proxy_prefixes_list",
    ),
    Setting(
        "AUTH_PROXY_INLINE_TYPES",
        ["application/json"],
        "media types the proxy serves inline (others as attachments; `+json` types count as JSON)",
        "proxy_inline_types_list",
    ),
    Setting(
        "AUTH_PROXY_MAX_BODY_BYTES",
        1024 * 1024,
        "the largest request body the proxy accepts",
        "proxy_max_body_bytes",
    ),
    # Sign-in throttling
    Setting(
        "AUTH_LOGIN_THROTTLE_WINDOW",
        300,
        "seconds of the sign-in throttle window",
        "login_throttle_window",
    ),
    Setting(
        "AUTH_LOGIN_MAX_FAILURES",
        5,
        "failed sign-ins per email from one client address and window",
        "login_max_failures",
    ),
    Setting(
        "AUTH_LOGIN_MAX_FAILURES_PER_IP",
        20,
        "failed sign-ins per client address and window, whatever the email",
        "login_max_failures_per_ip",
    ),
    Setting(
        "AUTH_LOGIN_EMAIL_CONCURRENCY",
        2,
        "sign-in attempts in flight at once for an email being guessed, from all clients",
        "login_email_concurrency",
    ),
    Setting(
        "AUTH_LOGIN_CONCURRENCY",
        0,
        "sign-ins one worker process checks with the backend at once; more answer 503 "
        "(0: half its threads, so a slow backend never holds them all)",
        "login_concurrency_raw",
    ),
    # Sign-out
    Setting(
        "AUTH_REVOCATION_MAX_BACKOFF",
        3600,
        "longest pause, in seconds, between retries of a queued revocation",
        "revocation_max_backoff",
    ),
    Setting(
        "AUTH_REVOCATION_RETRY_INTERVAL",
        30,
        "seconds between a worker's looks for due revocations after a response (0: only "
        "`manage.py revocations`)",
        "revocation_retry_interval",
    ),
    # Where the tokens live, and the sessions built on them
    Setting(
        "AUTH_TOKEN_STORAGE",
        "cookies",
        "where a sign-in's tokens live: `cookies` (HttpOnly cookies in the browser) or "
        "`session` (sealed in the server-side session; the browser holds only `sessionid`)",
        "token_storage",
    ),
    Setting(
        "AUTH_SESSION_TOUCH_INTERVAL",
        60,
        "seconds between writes of a session's last-seen time (the sessions page)",
        "session_touch_interval",
    ),
    Setting(
        "AUTH_BACKCHANNEL_SECRET",
        None,
        "shared secret (HS256) of back-channel sign-out tokens; unset: "
        "`/accounts/backchannel-logout/` answers 404",
        "backchannel_secret",
    ),
    Setting(
        "AUTH_BACKCHANNEL_MAX_AGE",
        120,
        "seconds after its `iat` a back-channel sign-out token is accepted",
        "backchannel_max_age",
    ),
    # Observability (accounts/ops/metrics.py)
    Setting(
        "AUTH_METRICS",
        False,
        "serve Prometheus metrics at `/metrics` (off: 404)",
        "metrics",
    ),
    Setting(
        "AUTH_METRICS_ALLOWED_IPS",
        ["127.0.0.1", "::1"],
        "client addresses `/metrics` answers (others: 403, unless they send the token)",
        "metrics_allowed_ips",
    ),
    Setting(
        "AUTH_METRICS_TOKEN",
        None,
        "a bearer token that opens `/metrics` from any address (`Authorization: Bearer …`)",
        "metrics_token",
    ),
    Setting(
        "AUTH_TRUSTED_PROXY_COUNT",
        0,
        "proxies in front of the app whose `X-Forwarded-For` is believed",
        "trusted_proxy_count",
    ),
    Setting(
        "AUTH_TRUSTED_PROXIES",
        [],
        "addresses or networks (`10.0.0.0/8`) of those proxies: `X-Forwarded-For` and "
        "`X-Request-ID` are believed only from them (empty: from nobody)",
        "trusted_proxies_list",
    ),
)

_BY_ATTR = {setting.attr: setting for setting in SETTINGS}


class AccountsSettings:
    """Typed access to `SETTINGS`: `from accounts.conf import conf; conf.refresh_wait`.

    Each value is read from Django's settings once and kept (a request reads
    dozens, and a setting left to its default costs Django an exception each
    time); a changed setting (`override_settings`, pytest-django's
    `settings`) clears what was kept.
    """

    def __init__(self):
        self._values: dict[str, Any] = {}
        setting_changed.connect(self._forget, dispatch_uid="accounts.conf")

    def __getattr__(self, attr: str) -> Any:
        try:
            return self._values[attr]
        except KeyError:
            pass
        try:
            setting = _BY_ATTR[attr]
        except KeyError:
            raise AttributeError(attr) from None
        value = self._values[attr] = getattr(settings, setting.name, setting.default)
        return value

    def _forget(self, **kwargs) -> None:
        self._values.clear()

    # Values derived from the raw settings above.
    @property
    def api_baseurl(self) -> str:
        return self.api_baseurl_raw.rstrip("/")

    @property
    def token_cookies(self) -> tuple[str, str]:
        return (self.access_cookie, self.refresh_cookie)

    @property
    def allowed_roles(self) -> frozenset[str]:
        return frozenset(self.allowed_roles_list)

    @property
    def superuser_roles(self) -> frozenset[str]:
        return frozenset(self.superuser_roles_list)

    @property
    def cookie_domain(self) -> str | None:
        return self.cookie_domain_raw or None

    @property
    def cookie_samesite(self) -> str | None:
        return self.cookie_samesite_raw or None

    @property
    def login_invalid_statuses(self) -> frozenset[int]:
        return frozenset(int(status) for status in self.login_invalid_statuses_list)

    @property
    def shape(self):
        """The backend's shape as the settings declare it (accounts/shape.py), kept."""
        try:
            return self._values["_shape"]
        except KeyError:
            from .shape import BackendShape

            shape = self._values["_shape"] = BackendShape.from_settings(self)
            return shape

    @property
    def backend_timeout(self) -> tuple[float, float]:
        """(connect, read) seconds for every backend call."""
        return (self.backend_connect_timeout, self.backend_read_timeout)

    @property
    def proxy_inline_types(self) -> frozenset[str]:
        return frozenset(t.strip().lower() for t in self.proxy_inline_types_list)

    @property
    def proxy_prefixes(self) -> tuple[str, ...]:
        return tuple(self.proxy_prefixes_list)

    @property
    def refresh_waiters(self) -> int:
        """How many threads of this process may wait for refreshes at once: half of them."""
        return _half_the_threads()

    @property
    def login_concurrency(self) -> int:
        """AUTH_LOGIN_CONCURRENCY, or half this process's threads (SERVER_THREADS), at least 1."""
        if self.login_concurrency_raw > 0:
            return self.login_concurrency_raw
        return _half_the_threads()

    @property
    def trusted_proxies(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """AUTH_TRUSTED_PROXIES as networks, kept; a bare address is a network of one.

        :raises ImproperlyConfigured: an entry is neither an address nor a network.
        """
        try:
            return self._values["_trusted_proxies"]
        except KeyError:
            pass
        networks = []
        for entry in self.trusted_proxies_list:
            if not entry.strip():
                continue
            try:
                networks.append(ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ImproperlyConfigured(
                    f"AUTH_TRUSTED_PROXIES: {entry!r} is not an IP address or network "
                    "(such as 10.0.0.5 or 10.0.0.0/8)"
                ) from None
        self._values["_trusted_proxies"] = tuple(networks)
        return self._values["_trusted_proxies"]


conf = AccountsSettings()


def _half_the_threads() -> int:
    """Half this process's threads (SERVER_THREADS, from gunicorn.conf.py), at least 1."""
    return max(1, getattr(settings, "SERVER_THREADS", 1) // 2)
