"""Every reference-API setting, read from django.conf.settings when used.

Reading at use time (not import time) keeps `override_settings` and pytest's
`settings` fixture working without reload hooks.
"""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


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
        return settings.AUTHAPI_REFRESH_DELAY

    @property
    def expose_stats(self) -> bool:
        return settings.AUTHAPI_EXPOSE_STATS


api_settings = ApiSettings()

ACCESS_COOKIE = "access_token"
REFRESH_COOKIE = "refresh_token"
JWT_ALGORITHM = "HS256"
