"""Every reference-API setting, read from django.conf.settings when used.

Reading at use time (not import time) keeps `override_settings` and pytest's
`settings` fixture working without reload hooks.
"""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def _is_cookie_path(path: str) -> bool:
    """Whether `path` can be a cookie's `Path` as written (RFC 6265 §4.1.1).

    Printable ASCII only, and no ';', which would start another attribute.
    """
    return path.startswith("/") and all(0x20 < ord(c) < 0x7F and c != ";" for c in path)


class ApiSettings:
    @property
    def jwt_secret(self) -> str:
        secret = settings.AUTHAPI_JWT_SECRET
        if not secret:
            raise ImproperlyConfigured(
                "Set the AUTHAPI_JWT_SECRET environment variable: the reference auth API "
                "signs its access tokens with it."
            )
        return secret

    @property
    def access_ttl(self) -> int:
        return settings.AUTHAPI_ACCESS_TTL

    @property
    def refresh_ttl(self) -> int:
        return settings.AUTHAPI_REFRESH_TTL

    @property
    def cookie_secure(self) -> bool:
        return settings.AUTHAPI_COOKIE_SECURE

    @property
    def cookie_samesite(self) -> str:
        return settings.AUTHAPI_COOKIE_SAMESITE

    @property
    def cookie_domain(self) -> str | None:
        return settings.AUTHAPI_COOKIE_DOMAIN

    @property
    def refresh_cookie_path(self) -> str:
        """`Path` of the refresh cookie (the access cookie always has `Path=/`)."""
        path = settings.AUTHAPI_REFRESH_COOKIE_PATH
        if not _is_cookie_path(path):
            raise ImproperlyConfigured(
                "AUTHAPI_REFRESH_COOKIE_PATH must be a URL path starting with '/', in "
                f"printable ASCII without ';' or spaces (got {path!r})."
            )
        return path

    @property
    def login_window(self) -> int:
        return settings.AUTHAPI_LOGIN_WINDOW

    @property
    def max_failures_per_account(self) -> int:
        return settings.AUTHAPI_LOGIN_MAX_FAILURES_PER_ACCOUNT

    @property
    def max_failures_per_ip(self) -> int:
        return settings.AUTHAPI_LOGIN_MAX_FAILURES_PER_IP

    @property
    def trusted_proxies(self) -> list[str]:
        return settings.AUTHAPI_TRUSTED_PROXIES

    @property
    def refresh_delay(self) -> float:
        """The configured delay; `faults.refresh_delay()` is what the view sleeps."""
        return settings.AUTHAPI_REFRESH_DELAY

    @property
    def expose_stats(self) -> bool:
        return settings.AUTHAPI_EXPOSE_STATS


api_settings = ApiSettings()

ACCESS_COOKIE = "access_token"
REFRESH_COOKIE = "refresh_token"
JWT_ALGORITHM = "HS256"
