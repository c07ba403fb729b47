"""System checks: wrong auth configuration fails `manage.py check` with a hint."""

from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .conf import conf

TRANSPORTS = ("cookie", "bearer", "body")
SAMESITE = (None, "Lax", "Strict", "None")
STORAGES = ("cookies", "session")
ROLES_FROM = ("me", "token")


@register()
def check_auth_settings(app_configs=None, **kwargs):
    errors = []
    protected = {settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME}
    for name in conf.token_cookies:
        if name in protected:
            errors.append(
                Error(
                    f"The token cookie name {name!r} is one of the app's own cookies.",
                    hint="Rename AUTH_ACCESS_COOKIE / AUTH_REFRESH_COOKIE or the session/CSRF "
                    "cookie: the backend must never overwrite them.",
                    id="accounts.E001",
                )
            )
    if conf.access_cookie == conf.refresh_cookie:
        errors.append(
            Error("AUTH_ACCESS_COOKIE and AUTH_REFRESH_COOKIE are equal.", id="accounts.E002")
        )
    if conf.token_transport not in TRANSPORTS:
        errors.append(
            Error(
                f"AUTH_BACKEND_TOKEN_TRANSPORT is {conf.token_transport!r}.",
                hint=f"Use one of {', '.join(TRANSPORTS)}.",
                id="accounts.E003",
            )
        )
    if conf.token_storage not in STORAGES:
        errors.append(
            Error(
                f"AUTH_TOKEN_STORAGE is {conf.token_storage!r}.",
                hint=f"Use one of {', '.join(STORAGES)}.",
                id="accounts.E010",
            )
        )
    if urlsplit(conf.api_baseurl).scheme not in ("http", "https"):
        errors.append(
            Error(
                f"API_BASEURL {conf.api_baseurl!r} is not an http(s) URL.",
                hint="For example http://127.0.0.1:8001",
                id="accounts.E004",
            )
        )
    if conf.cookie_samesite not in SAMESITE:
        errors.append(
            Error(
                f"AUTH_COOKIE_SAMESITE is {conf.cookie_samesite!r}.",
                hint="Use Lax, Strict or None.",
                id="accounts.E005",
            )
        )
    if conf.cookie_samesite == "None" and not conf.cookie_secure:
        errors.append(
            Error(
                "AUTH_COOKIE_SAMESITE=None needs AUTH_COOKIE_SECURE=True.",
                hint="Browsers drop SameSite=None cookies that are not Secure.",
                id="accounts.E006",
            )
        )
    errors.extend(_prefix_errors())
    errors.extend(_shape_errors())
    return errors


def _shape_errors() -> list[Error]:
    """The backend's declared shape (accounts/shape.py) must parse and fit together."""
    if conf.token_transport not in TRANSPORTS:
        return []  # E003 says it; the shape's defaults follow the transport
    errors = []
    try:
        shape = conf.shape
    except ImproperlyConfigured as exc:
        return [
            Error(
                str(exc),
                hint="docs/backends.md says what each shape setting means; `manage.py authcheck` "
                "prints the values for yours.",
                id="accounts.E011",
            )
        ]
    for problem in shape.conflicts():
        errors.append(Error(f"The backend shape: {problem}.", id="accounts.E012"))
    if conf.roles_from not in ROLES_FROM:
        errors.append(
            Error(
                f"AUTH_ROLES_FROM is {conf.roles_from!r}.",
                hint="Use me (GET AUTH_ME_PATH) or token (the access token's claims).",
                id="accounts.E013",
            )
        )
    return errors


def _prefix_errors() -> list[Error]:
    """Token cookie names with a prefix the app's own cookie attributes would break.

    Browsers drop a `__Secure-` cookie without `Secure`, and a `__Host-` one
    without `Secure`, with a `Domain` or with a `Path` other than `/` (RFC
    6265bis §4.1.3): the user would seem to sign in and be signed out at once.
    """
    errors = []
    for setting, name in (
        ("AUTH_ACCESS_COOKIE", conf.access_cookie),
        ("AUTH_REFRESH_COOKIE", conf.refresh_cookie),
    ):
        needs = []
        if name.startswith(("__Secure-", "__Host-")) and not conf.cookie_secure:
            needs.append("AUTH_COOKIE_SECURE=True")
        if name.startswith("__Host-") and conf.cookie_path != "/":
            needs.append("AUTH_COOKIE_PATH=/")
        if name.startswith("__Host-") and conf.cookie_domain:
            needs.append("no AUTH_COOKIE_DOMAIN")
        if needs:
            errors.append(
                Error(
                    f"{setting} {name!r} needs {', '.join(needs)}.",
                    hint="Browsers drop a prefixed cookie whose attributes break its prefix.",
                    id="accounts.E008",
                )
            )
    return errors


@register(deploy=True)
def check_static_manifest(app_configs=None, **kwargs):
    """Production serves hashed static files: without the manifest every page is a 500.

    A deploy check (`check --deploy`), and config/wsgi.py runs it before the
    first request, so a deploy that skipped `collectstatic` stops at start-up
    with this message instead of answering 500 on every page.
    """
    from django.contrib.staticfiles.storage import ManifestFilesMixin
    from django.core.files.storage import storages

    storage = storages["staticfiles"]
    if settings.DEBUG or not isinstance(storage, ManifestFilesMixin):
        return []
    try:
        found = storage.manifest_storage.exists(storage.manifest_name)
    except (ImproperlyConfigured, OSError):
        found = False
    if found:
        return []
    return [
        Error(
            f"No static files manifest in STATIC_ROOT ({settings.STATIC_ROOT}).",
            hint="Run `manage.py collectstatic --noinput` as part of the deploy, after "
            "`migrate`, with the same settings and STATIC_ROOT.",
            id="accounts.E007",
        )
    ]


def require_static_manifest() -> None:
    """Raise ImproperlyConfigured when check_static_manifest finds an error (config/wsgi.py)."""
    errors = check_static_manifest()
    if errors:
        raise ImproperlyConfigured(f"{errors[0].msg} {errors[0].hint}")


@register()
def check_trusted_proxies(app_configs=None, **kwargs):
    """X-Forwarded-For needs both how many proxies there are and which peers they are."""
    try:
        trusted = conf.trusted_proxies
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="accounts.E014")]
    if conf.trusted_proxy_count > 0 and not trusted:
        return [
            Warning(
                f"AUTH_TRUSTED_PROXY_COUNT is {conf.trusted_proxy_count} but "
                "AUTH_TRUSTED_PROXIES is empty: X-Forwarded-For and X-Request-ID are "
                "believed from nobody.",
                hint="List the proxies' addresses or networks in AUTH_TRUSTED_PROXIES (e.g. "
                "10.0.0.0/8); until then every client has the proxy's address and shares "
                "its sign-in throttle.",
                id="accounts.W002",
            )
        ]
    return []


# `check --deploy` warns about a shared secret shorter than this. The back-channel
# secret is an HS256 key, which must be at least as long as the hash, 256 bits (RFC
# 7518 §3.2): a short one can be brute-forced offline from a single signed token. The
# metrics token opens /metrics from any address. 32 characters of
# `secrets.token_urlsafe()` hold 192 bits, of hex 128: both out of reach.
MIN_SECRET_LENGTH = 32


@register(deploy=True)
def check_secret_lengths(app_configs=None, **kwargs):
    """Shared secrets long enough that nobody guesses them."""
    warnings = []
    for name, value in (
        ("AUTH_BACKCHANNEL_SECRET", conf.backchannel_secret),
        ("AUTH_METRICS_TOKEN", conf.metrics_token),
    ):
        if value and len(value) < MIN_SECRET_LENGTH:
            warnings.append(
                Warning(
                    f"{name} has {len(value)} characters; at least {MIN_SECRET_LENGTH} are needed.",
                    hint=f"Generate one: python -c 'import secrets; "
                    f"print(secrets.token_urlsafe({MIN_SECRET_LENGTH}))'. A short secret can "
                    "be guessed: the back-channel one signs sign-outs (an HS256 key, at least "
                    "256 bits by RFC 7518 §3.2), the metrics one opens /metrics from anywhere.",
                    id="accounts.W003",
                )
            )
    return warnings


TOKEN_MIDDLEWARE = "accounts.middleware.TokenRefreshMiddleware"  # noqa: S105 - a dotted path
MUST_COME_BEFORE = (
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
)


@register()
def check_middleware_order(app_configs=None, **kwargs):
    """The token middleware needs the session and the user, and leaves messages."""
    middleware = list(settings.MIDDLEWARE)
    if TOKEN_MIDDLEWARE not in middleware:
        return []
    position = middleware.index(TOKEN_MIDDLEWARE)
    warnings = []
    for name in MUST_COME_BEFORE:
        # A subclass (accounts.middleware.AuthenticationMiddleware) stands in for its base.
        found = next((entry for entry in middleware if _is_or_extends(entry, name)), None)
        if found is not None and middleware.index(found) > position:
            warnings.append(
                Warning(
                    f"{TOKEN_MIDDLEWARE} comes before {found} in MIDDLEWARE.",
                    hint=f"Move it after {found.rsplit('.', 1)[1]}: it reads the session and "
                    "the user, and a session it ends must still leave its message.",
                    id="accounts.W001",
                )
            )
    return warnings


def _is_or_extends(entry: str, base: str) -> bool:
    if entry == base:
        return True
    try:
        return issubclass(import_string(entry), import_string(base))
    except (ImportError, TypeError):
        return False


@register()
def check_session_engine(app_configs=None, **kwargs):
    """Sign-out must be able to end a session here: the session must live on the server."""
    engine = settings.SESSION_ENGINE
    if engine == "django.contrib.sessions.backends.signed_cookies":
        return [
            Error(
                f"SESSION_ENGINE={engine} keeps each session in the browser's cookie: a "
                "sign-out, a refused refresh or a back-channel sign-out cannot end it here.",
                hint='Set SESSION_ENGINE = "accounts.sessions", or Django\'s '
                '"django.contrib.sessions.backends.db" or "cached_db" (docs/settings.md).',
                id="accounts.E015",
            )
        ]
    return []
