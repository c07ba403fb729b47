"""Every reference-API setting, read from django.conf.settings when used.

Reading at use time (not import time) keeps `override_settings` and pytest's
`settings` fixture working without reload hooks.
"""

import re

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def _is_cookie_path(path: str) -> bool:
    """Whether `path` can be a cookie's `Path` as written (RFC 6265 §4.1.1).

    Printable ASCII only, and no ';', which would start another attribute.
    """
    return path.startswith("/") and all(0x20 < ord(c) < 0x7F and c != ";" for c in path)


# RFC 2616 separators: not allowed in a cookie name (RFC 6265 §4.1.1).
SEPARATORS = '()<>@,;:\\"/[]?={}'

# An HTTP header name (RFC 9110 §5.1: a token).
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# A URL path of literal segments: RFC 3986 pchar without percent-escapes.
ENDPOINT_PATH = re.compile(r"(/[A-Za-z0-9._~!$&'()*+,;=:@-]+)+/?")
# The test hooks keep their own paths whatever the endpoints' are.
HOOK_PATHS = ("/_stats", "/_faults")

TRANSPORTS = ("cookies", "body", "mixed")
ME_ROLES = ("list", "string", "object", "objects", "map", "none")
ENDPOINT_SETTINGS = {
    "login": "AUTHAPI_LOGIN_PATH",
    "refresh": "AUTHAPI_REFRESH_PATH",
    "logout": "AUTHAPI_LOGOUT_PATH",
    "me": "AUTHAPI_ME_PATH",
}


def _choice(name: str, allowed: tuple):
    """Return setting `name`, refusing a value outside `allowed` (the first is the default)."""
    value = getattr(settings, name)
    if value not in allowed:
        choices = ", ".join(repr(v) for v in allowed)
        raise ImproperlyConfigured(f"{name} must be one of {choices} (got {value!r}).")
    return value


def _endpoint_path(name: str) -> str:
    path = getattr(settings, name)
    if not isinstance(path, str) or not ENDPOINT_PATH.fullmatch(path) or path in HOOK_PATHS:
        raise ImproperlyConfigured(
            f"{name} must be a URL path such as '/api/v1/auth/login': '/' then segments of "
            f"letters, digits and -._~!$&'()*+,;=:@, not {' or '.join(HOOK_PATHS)} "
            f"(got {path!r})."
        )
    return path


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
    def login_delay(self) -> float:
        """The configured delay; `faults.login_delay()` is what the view sleeps."""
        return settings.AUTHAPI_LOGIN_DELAY

    @property
    def expose_stats(self) -> bool:
        return settings.AUTHAPI_EXPOSE_STATS

    # --- backend shapes (docs/settings.md, "Its shapes") ---------------------

    @property
    def access_cookie(self) -> str:
        return self._cookie_name(settings.AUTHAPI_ACCESS_COOKIE, "/")

    @property
    def refresh_cookie(self) -> str:
        return self._cookie_name(settings.AUTHAPI_REFRESH_COOKIE, self.refresh_cookie_path)

    def _cookie_name(self, name: str, path: str) -> str:
        """Return `name`, refusing a prefix its own attributes break (RFC 6265bis §4.1.3)."""
        if not name or not all(0x20 < ord(c) < 0x7F and c not in SEPARATORS for c in name):
            raise ImproperlyConfigured(f"{name!r} is not a cookie name.")
        if name.startswith(("__Secure-", "__Host-")) and not self.cookie_secure:
            prefix = name.split("-", 1)[0]
            raise ImproperlyConfigured(f"A {prefix}- cookie needs AUTHAPI_COOKIE_SECURE.")
        if name.startswith("__Host-") and (path != "/" or self.cookie_domain):
            raise ImproperlyConfigured(f"A __Host- cookie needs Path=/ and no Domain ({name}).")
        return name

    @property
    def rotate_refresh(self) -> bool:
        """Whether a refresh spends its token for a new pair (False: a new access token only)."""
        return settings.AUTHAPI_ROTATE_REFRESH

    @property
    def reuse_detection(self) -> bool:
        """Whether a spent refresh token presented again revokes its sign-in (False: accepted)."""
        return settings.AUTHAPI_REUSE_DETECTION

    @property
    def token_transport(self) -> str:
        """Where tokens travel.

        `cookies`: both in Set-Cookie; `body`: both in JSON bodies, the access
        token back in `Authorization: Bearer`; `mixed`: the access token in the
        JSON body and back as Bearer, the refresh token as a cookie (NocoDB).
        """
        return _choice("AUTHAPI_TOKEN_TRANSPORT", TRANSPORTS)

    @property
    def tokens_in_body(self) -> bool:
        """Whether both tokens travel in JSON bodies (`body` transport)."""
        return self.token_transport == "body"  # noqa: S105 - a transport name

    @property
    def access_field(self) -> str:
        """The access token's field in JSON answers, dotted for a nested one."""
        return ".".join(self.access_field_path)

    @property
    def refresh_field(self) -> str:
        """The refresh token's field in JSON answers and bodies, dotted for a nested one."""
        return ".".join(self.refresh_field_path)

    @property
    def access_field_path(self) -> tuple[str, ...]:
        return self._field_paths()[0]

    @property
    def refresh_field_path(self) -> tuple[str, ...]:
        return self._field_paths()[1]

    def _field_paths(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The two fields as key paths, refusing a pair one answer cannot hold."""
        paths = []
        for name in ("AUTHAPI_ACCESS_FIELD", "AUTHAPI_REFRESH_FIELD"):
            value = getattr(settings, name)
            keys = tuple(value.split(".")) if isinstance(value, str) else ()
            if not keys or not all(keys):
                raise ImproperlyConfigured(
                    f"{name} must be a JSON field name, or a dotted path of them for a nested "
                    f"one such as 'data.tokens.access' (got {value!r})."
                )
            paths.append(keys)
        access, refresh = paths
        shorter = min(len(access), len(refresh))
        if access[:shorter] == refresh[:shorter]:
            raise ImproperlyConfigured(
                "AUTHAPI_ACCESS_FIELD and AUTHAPI_REFRESH_FIELD must name two different fields, "
                f"neither inside the other (got {'.'.join(access)!r} and {'.'.join(refresh)!r})."
            )
        return access, refresh

    @property
    def access_header(self) -> str | None:
        """A request header carrying the raw access token (`xc-auth`); None: Bearer/cookie."""
        name = settings.AUTHAPI_ACCESS_HEADER or ""
        if name and not HEADER_NAME.fullmatch(name):
            raise ImproperlyConfigured(
                "AUTHAPI_ACCESS_HEADER must be an HTTP header name such as 'xc-auth' "
                f"(got {name!r})."
            )
        return name or None

    @property
    def refresh_in(self) -> str:
        """`default`: the refresh token comes back where it went out; `bearer`: as Bearer only."""
        return _choice("AUTHAPI_REFRESH_IN", ("default", "bearer"))

    @property
    def cookie_max_age(self) -> bool:
        """Whether token cookies carry `Max-Age` (False: `Expires` only)."""
        return settings.AUTHAPI_COOKIE_MAX_AGE

    @property
    def refresh_format(self) -> str:
        """`urlsafe`: 43 base64url characters; `hex`: 80 hex digits."""
        return _choice("AUTHAPI_REFRESH_FORMAT", ("urlsafe", "hex"))

    @property
    def login_failure_status(self) -> int:
        """The status of a wrong email or password (422: brocoders' error body)."""
        return _choice("AUTHAPI_LOGIN_FAILURE_STATUS", (401, 400, 403, 422))

    @property
    def login_answer_user(self) -> bool:
        """Whether body/mixed sign-ins also answer `tokenExpires` and `user` (brocoders)."""
        return settings.AUTHAPI_LOGIN_ANSWER_USER

    @property
    def me_guest(self) -> bool:
        """Whether `/users/me` without a valid token answers a 200 guest instead of 401."""
        return settings.AUTHAPI_ME_GUEST

    @property
    def me_roles(self) -> str:
        """How `/users/me` spells the roles (docs/settings.md, "Its shapes")."""
        return _choice("AUTHAPI_ME_ROLES", ME_ROLES)

    @property
    def role_case(self) -> str:
        """`as-is`, or `title`: "Admin" in `/users/me` and in the access token."""
        return _choice("AUTHAPI_ROLE_CASE", ("as-is", "title"))

    @property
    def logout_status(self) -> int:
        """The status of a sign-out (204: no body)."""
        return _choice("AUTHAPI_LOGOUT_STATUS", (200, 201, 204))

    # --- where the endpoints live (authapi/urls.py) ----------------------------

    @property
    def endpoint_paths(self) -> dict[str, str]:
        """The four endpoints' paths by view name, validated as one set."""
        paths = {view: _endpoint_path(name) for view, name in ENDPOINT_SETTINGS.items()}
        if len(set(paths.values())) != len(paths):
            raise ImproperlyConfigured(
                "AUTHAPI_LOGIN_PATH, AUTHAPI_REFRESH_PATH, AUTHAPI_LOGOUT_PATH and "
                f"AUTHAPI_ME_PATH must be four different paths (got {sorted(paths.values())})."
            )
        return paths

    @property
    def clock_offset(self) -> float:
        """Seconds the API's clock is ahead (negative: behind) for `iat`, `exp` and `Date`."""
        return settings.AUTHAPI_CLOCK_OFFSET

    # --- back-channel sign-out of the web app (authapi/backchannel.py) --------

    @property
    def backchannel_url(self) -> str | None:
        """The app's `/accounts/backchannel-logout/` URL; unset: `apiuser` tells the app nothing."""
        return getattr(settings, "AUTHAPI_BACKCHANNEL_URL", None) or None

    @property
    def backchannel_secret(self) -> str:
        """HS256 key of the logout tokens: the app's AUTH_BACKCHANNEL_SECRET."""
        secret = getattr(settings, "AUTHAPI_BACKCHANNEL_SECRET", None)
        if not secret:
            raise ImproperlyConfigured(
                "Set AUTHAPI_BACKCHANNEL_SECRET (the app's AUTH_BACKCHANNEL_SECRET) with "
                "AUTHAPI_BACKCHANNEL_URL: the logout tokens are signed with it."
            )
        return secret


api_settings = ApiSettings()

JWT_ALGORITHM = "HS256"
