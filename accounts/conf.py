"""Every accounts setting, its default, read from django.conf.settings when used.

`config/settings/base.py` fills these from the environment with the defaults
below; a project that does not name a setting gets the default. Reading at use
time keeps `override_settings` and pytest's `settings` fixture working.
"""

from django.conf import settings

DEFAULTS = {
    "API_BASEURL": "http://127.0.0.1:8001",
    "AUTH_LOGIN_PATH": "/auth/login",
    "AUTH_REFRESH_PATH": "/auth/refresh",
    "AUTH_LOGOUT_PATH": "/auth/logout",
    "AUTH_ME_PATH": "/users/me",
    "AUTH_HEALTH_PATH": "/users/me",
    "AUTH_ACCESS_COOKIE": "access_token",
    "AUTH_REFRESH_COOKIE": "refresh_token",
    "AUTH_ALLOWED_ROLES": ["admin", "evaluator"],
    "AUTH_SUPERUSER_ROLES": ["admin"],
    "AUTH_COOKIE_DOMAIN": None,
    "AUTH_COOKIE_SECURE": True,
    "AUTH_COOKIE_SAMESITE": "Lax",
    "AUTH_REFRESH_LEEWAY": 60,
    "AUTH_BACKEND_TIMEOUT": 5.0,
    "AUTH_BACKEND_CONNECT_TIMEOUT": 2.0,
    "AUTH_HEALTH_TIMEOUT": 2.0,
    "AUTH_BACKEND_TOKEN_TRANSPORT": "cookie",
    "AUTH_BACKEND_POOL_SIZE": 20,
    "AUTH_PROXY_PREFIXES": ["users/"],
    "AUTH_REFRESH_GRACE": 20,
    "AUTH_REFRESH_WAIT": 5.0,
    "AUTH_REFRESH_TIMEOUT": 15.0,
    "AUTH_REFRESH_LOCK_TTL": 5,
    "AUTH_LOGIN_THROTTLE_WINDOW": 300,
    "AUTH_LOGIN_MAX_FAILURES_PER_IP": 20,
    "AUTH_LOGIN_MAX_FAILURES_PER_EMAIL": 5,
    "AUTH_TRUSTED_PROXY_COUNT": 0,
    "AUTH_BACKEND_MAX_RESPONSE_BYTES": 2 * 1024 * 1024,
    "AUTH_PROXY_MAX_BODY_BYTES": 1024 * 1024,
}


def _get(name: str):
    return getattr(settings, name, DEFAULTS[name])


class AccountsSettings:
    """Typed access to the settings above: `from accounts.conf import conf`."""

    @property
    def api_baseurl(self) -> str:
        return _get("API_BASEURL").rstrip("/")

    @property
    def login_path(self) -> str:
        return _get("AUTH_LOGIN_PATH")

    @property
    def refresh_path(self) -> str:
        return _get("AUTH_REFRESH_PATH")

    @property
    def logout_path(self) -> str:
        return _get("AUTH_LOGOUT_PATH")

    @property
    def me_path(self) -> str:
        return _get("AUTH_ME_PATH")

    @property
    def health_path(self) -> str:
        return _get("AUTH_HEALTH_PATH")

    @property
    def access_cookie(self) -> str:
        return _get("AUTH_ACCESS_COOKIE")

    @property
    def refresh_cookie(self) -> str:
        return _get("AUTH_REFRESH_COOKIE")

    @property
    def token_cookies(self) -> tuple[str, str]:
        return (self.access_cookie, self.refresh_cookie)

    @property
    def allowed_roles(self) -> frozenset[str]:
        return frozenset(_get("AUTH_ALLOWED_ROLES"))

    @property
    def superuser_roles(self) -> frozenset[str]:
        return frozenset(_get("AUTH_SUPERUSER_ROLES"))

    @property
    def cookie_domain(self) -> str | None:
        return _get("AUTH_COOKIE_DOMAIN") or None

    @property
    def cookie_secure(self) -> bool:
        return _get("AUTH_COOKIE_SECURE")

    @property
    def cookie_samesite(self) -> str | None:
        return _get("AUTH_COOKIE_SAMESITE") or None

    @property
    def refresh_leeway(self) -> int:
        return _get("AUTH_REFRESH_LEEWAY")

    @property
    def backend_timeout(self) -> tuple[float, float]:
        """(connect, read) seconds for every backend call."""
        return (_get("AUTH_BACKEND_CONNECT_TIMEOUT"), _get("AUTH_BACKEND_TIMEOUT"))

    @property
    def health_timeout(self) -> float:
        return _get("AUTH_HEALTH_TIMEOUT")

    @property
    def token_transport(self) -> str:
        return _get("AUTH_BACKEND_TOKEN_TRANSPORT")

    @property
    def pool_size(self) -> int:
        return _get("AUTH_BACKEND_POOL_SIZE")

    @property
    def proxy_prefixes(self) -> tuple[str, ...]:
        return tuple(_get("AUTH_PROXY_PREFIXES"))

    @property
    def refresh_grace(self) -> int:
        return _get("AUTH_REFRESH_GRACE")

    @property
    def refresh_wait(self) -> float:
        return _get("AUTH_REFRESH_WAIT")

    @property
    def refresh_timeout(self) -> float:
        return _get("AUTH_REFRESH_TIMEOUT")

    @property
    def refresh_lock_ttl(self) -> int:
        return _get("AUTH_REFRESH_LOCK_TTL")

    @property
    def login_throttle_window(self) -> int:
        return _get("AUTH_LOGIN_THROTTLE_WINDOW")

    @property
    def login_max_failures_per_ip(self) -> int:
        return _get("AUTH_LOGIN_MAX_FAILURES_PER_IP")

    @property
    def login_max_failures_per_email(self) -> int:
        return _get("AUTH_LOGIN_MAX_FAILURES_PER_EMAIL")

    @property
    def trusted_proxy_count(self) -> int:
        return _get("AUTH_TRUSTED_PROXY_COUNT")

    @property
    def max_response_bytes(self) -> int:
        return _get("AUTH_BACKEND_MAX_RESPONSE_BYTES")

    @property
    def proxy_max_body_bytes(self) -> int:
        return _get("AUTH_PROXY_MAX_BODY_BYTES")


conf = AccountsSettings()
