"""Settings shared by every environment.

This package is the only code that reads the environment. Defaults here are
the production-safe ones; ``dev`` and ``test`` relax them, ``production``
demands the secrets.
"""

from pathlib import Path

import environ
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from accounts.conf import SETTINGS as AUTH_SETTINGS

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
# Real environment variables win over the file; ENV_FILE points elsewhere
# (tests pass /dev/null so a developer's .env cannot change what they check).
environ.Env.read_env(env.str("ENV_FILE", default=str(BASE_DIR / ".env")), overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY", default="")
# Rotating SECRET_KEY: put the old one here for a while; sessions, token
# hashes and queued revocations made under it stay readable.
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "csp",
    "accounts",
    "accounts.usersessions",
    "accounts.ops",
    "dashboard",
]
# The reference auth API (authapi/) is a development and test tool, not part
# of the app: installed by the dev and test settings, by `manage.py
# runauthapi`, or by AUTHAPI_ENABLED=1 for the process that serves it, and
# never in production, whose database holds only the app's tables.
AUTHAPI_ENABLED = env.bool("AUTHAPI_ENABLED", default=False)
if AUTHAPI_ENABLED:
    INSTALLED_APPS.append("authapi")

MIDDLEWARE = [
    # First: every later middleware, the view and their logs run with the request's id.
    "accounts.requestid.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "accounts.middleware.AuthenticationMiddleware",
    # "Last seen" on the sessions page (accounts/usersessions/middleware.py).
    "accounts.usersessions.middleware.UserSessionMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # Every response to a signed-in user: Cache-Control private, no-store.
    "dashboard.middleware.SignedInNoStoreMiddleware",
    # After MessageMiddleware: a session ended as the response goes out still
    # leaves its message ("We could not confirm your sign-in").
    "accounts.middleware.TokenRefreshMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "accounts.csp.CSPMiddleware",
    # Last, so its 400 gets every header above; before any URL is resolved or
    # CSRF reads the body (accounts/formcharset.py).
    "accounts.formcharset.FormCharsetMiddleware",
]

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = ["accounts.backends.AuthApiBackend"]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.context_processors.demo_roles",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The app and the reference API are two processes on one SQLite file in
    # development: WAL lets readers and a writer overlap, IMMEDIATE takes the
    # write lock up front so concurrent writers queue instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # Django's backend, with a health check that needs no round trip while
        # the connection is idle and the server has not closed it.
        DATABASES["default"]["ENGINE"] = "accounts.postgresql"
        # A database that does not answer costs a request seconds (then the
        # 503 page of accounts/outage.py), not a worker held for minutes;
        # `?connect_timeout=` in DATABASE_URL wins.
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 3)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The cache coordinates single-flight token refresh. With
# REDIS_URL every worker on every app server shares it; without it the
# database cache (its table made by `migrate`) is shared by every worker of
# every server on the same database.
REDIS_URL = env("REDIS_URL", default="")
CACHE_KEY_PREFIX = env("CACHE_KEY_PREFIX", default="tokenauth")
DATABASE_CACHE = {
    "BACKEND": "django.core.cache.backends.db.DatabaseCache",
    "LOCATION": "django_cache",
    "KEY_PREFIX": CACHE_KEY_PREFIX,
    # Refresh outcomes must outlive their spent tokens (accounts/refresh.py):
    # Django's default of 300 entries would cull them under load.
    "OPTIONS": {"MAX_ENTRIES": env.int("CACHE_MAX_ENTRIES", default=1_000_000)},
}
if REDIS_URL:
    # Redis while it answers, the database cache while it does not; how the
    # two hand over (and back) is in accounts/cache.py.
    CACHES = {
        "default": {
            "BACKEND": "accounts.cache.ResilientCache",
            "OPTIONS": {"PRIMARY": "redis", "FALLBACK": "database"},
        },
        "redis": {
            # Django's, with one redis-py client per pool (accounts/cache.py).
            "BACKEND": "accounts.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": CACHE_KEY_PREFIX,
            # Passed to redis-py's connection pool: a Redis that does not
            # answer costs half a second before the fallback takes the call.
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        },
        "database": DATABASE_CACHE,
    }
else:
    CACHES = {"default": DATABASE_CACHE}

# Sessions live in the database, with or without Redis. Not cached_db: a
# session flushed while Redis is down would come back from Redis once it
# answers again (a signed-out user signed in again, an older token record).
# accounts.sessions is Django's database store reading the session and its
# user in one query (the ORM's select_related); accounts.sessions_raw, the
# demo's, is the same store with its two statements written by hand: about
# 0.7 ms less app CPU on every signed-in request, a third of a proxied call's
# (docs/settings.md, bench/README.md).
SESSION_ENGINE = env("SESSION_ENGINE", default="accounts.sessions_raw")
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CSRF_FAILURE_VIEW = "accounts.views.csrf_failure"
DEFAULT_EXCEPTION_REPORTER_FILTER = "config.debug.DemoExceptionReporterFilter"
# No inline script or style anywhere: the page's JavaScript and CSS are static
# files, so an injected <script> has nowhere to run (and tokens are HttpOnly).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
        "base-uri": [NONE],
        "object-src": [NONE],
    }
}

LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "dashboard:index"
LOGOUT_REDIRECT_URL = "home"
# Sign-in passwords never reach this database (users are mirrored from the
# auth API with unusable passwords); the validators guard createsuperuser.

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- The auth backend this app signs people in against ---------------------
# Every AUTH_* setting, its default and meaning are defined once, in
# accounts/conf.py; here each is only read from the environment.
for _setting in AUTH_SETTINGS:
    globals()[_setting.name] = _setting.from_env(env)
API_BASEURL = API_BASEURL.rstrip("/")  # noqa: F821 - set by the loop above
# Threads serving requests in this process: gunicorn.conf.py sets GUNICORN_THREADS in
# each worker to the count it runs. Per-process bounds derive from it (AUTH_LOGIN_CONCURRENCY).
SERVER_THREADS = env.int("GUNICORN_THREADS", default=8)

# The demo's role-gated pages, as the backend spells the roles (docs/backends.md);
# AUTH_ROLES_CASE_INSENSITIVE applies here too.
DEMO_ADMIN_ROLES = env.list("DEMO_ADMIN_ROLES", default=["admin"])
# The demo's admin page is the operations app's health page: its roles open it
# unless AUTH_OPS_ROLES says otherwise.
if "AUTH_OPS_ROLES" not in env.ENVIRON:
    AUTH_OPS_ROLES = DEMO_ADMIN_ROLES
DEMO_EVALUATION_ROLES = env.list("DEMO_EVALUATION_ROLES", default=["evaluator", "admin"])

# --- The reference auth API (authapi/, served by `manage.py runauthapi`) ----
AUTHAPI_JWT_SECRET = env("AUTHAPI_JWT_SECRET", default="")
AUTHAPI_ACCESS_TTL = env.int("AUTHAPI_ACCESS_TTL", default=1800)
AUTHAPI_REFRESH_TTL = env.int("AUTHAPI_REFRESH_TTL", default=604800)
AUTHAPI_COOKIE_SECURE = env.bool("AUTHAPI_COOKIE_SECURE", default=True)
AUTHAPI_COOKIE_SAMESITE = env("AUTHAPI_COOKIE_SAMESITE", default="None")
AUTHAPI_COOKIE_DOMAIN = env("AUTHAPI_COOKIE_DOMAIN", default=None)
AUTHAPI_REFRESH_COOKIE_PATH = env("AUTHAPI_REFRESH_COOKIE_PATH", default="/")
AUTHAPI_LOGIN_WINDOW = env.int("AUTHAPI_LOGIN_WINDOW", default=300)
AUTHAPI_LOGIN_MAX_FAILURES_PER_ACCOUNT = env.int(
    "AUTHAPI_LOGIN_MAX_FAILURES_PER_ACCOUNT", default=5
)
AUTHAPI_LOGIN_MAX_FAILURES_PER_IP = env.int("AUTHAPI_LOGIN_MAX_FAILURES_PER_IP", default=20)
AUTHAPI_TRUSTED_PROXIES = env.list("AUTHAPI_TRUSTED_PROXIES", default=["127.0.0.1", "::1"])
AUTHAPI_REFRESH_DELAY = env.float("AUTHAPI_REFRESH_DELAY", default=0.0)
AUTHAPI_LOGIN_DELAY = env.float("AUTHAPI_LOGIN_DELAY", default=0.0)
AUTHAPI_EXPOSE_STATS = env.bool("AUTHAPI_EXPOSE_STATS", default=False)
# The backend shapes the reference API can take (docs/settings.md, "Its shapes").
AUTHAPI_ACCESS_COOKIE = env("AUTHAPI_ACCESS_COOKIE", default="access_token")
AUTHAPI_REFRESH_COOKIE = env("AUTHAPI_REFRESH_COOKIE", default="refresh_token")
AUTHAPI_ROTATE_REFRESH = env.bool("AUTHAPI_ROTATE_REFRESH", default=True)
AUTHAPI_REUSE_DETECTION = env.bool("AUTHAPI_REUSE_DETECTION", default=True)
AUTHAPI_TOKEN_TRANSPORT = env("AUTHAPI_TOKEN_TRANSPORT", default="cookies")
AUTHAPI_ACCESS_FIELD = env("AUTHAPI_ACCESS_FIELD", default="accessToken")
AUTHAPI_REFRESH_FIELD = env("AUTHAPI_REFRESH_FIELD", default="refreshToken")
AUTHAPI_CLOCK_OFFSET = env.float("AUTHAPI_CLOCK_OFFSET", default=0.0)
AUTHAPI_LOGIN_PATH = env("AUTHAPI_LOGIN_PATH", default="/auth/login")
AUTHAPI_REFRESH_PATH = env("AUTHAPI_REFRESH_PATH", default="/auth/refresh")
AUTHAPI_LOGOUT_PATH = env("AUTHAPI_LOGOUT_PATH", default="/auth/logout")
AUTHAPI_ME_PATH = env("AUTHAPI_ME_PATH", default="/users/me")
AUTHAPI_ACCESS_HEADER = env("AUTHAPI_ACCESS_HEADER", default="")
AUTHAPI_REFRESH_IN = env("AUTHAPI_REFRESH_IN", default="default")
AUTHAPI_COOKIE_MAX_AGE = env.bool("AUTHAPI_COOKIE_MAX_AGE", default=True)
AUTHAPI_REFRESH_FORMAT = env("AUTHAPI_REFRESH_FORMAT", default="urlsafe")
AUTHAPI_LOGIN_FAILURE_STATUS = env.int("AUTHAPI_LOGIN_FAILURE_STATUS", default=401)
AUTHAPI_LOGIN_ANSWER_USER = env.bool("AUTHAPI_LOGIN_ANSWER_USER", default=False)
AUTHAPI_ME_GUEST = env.bool("AUTHAPI_ME_GUEST", default=False)
AUTHAPI_ME_ROLES = env("AUTHAPI_ME_ROLES", default="list")
AUTHAPI_ROLE_CASE = env("AUTHAPI_ROLE_CASE", default="as-is")
AUTHAPI_LOGOUT_STATUS = env.int("AUTHAPI_LOGOUT_STATUS", default=200)
# Back-channel sign-out: `manage.py apiuser disable|revoke` tells the app (authapi/backchannel.py).
AUTHAPI_BACKCHANNEL_URL = env("AUTHAPI_BACKCHANNEL_URL", default=None)
AUTHAPI_BACKCHANNEL_SECRET = env("AUTHAPI_BACKCHANNEL_SECRET", default="")

# LOG_FORMAT=json: one JSON object a line for log shippers (timestamp, level,
# logger, message, request_id, exc_info when there is one); plain otherwise.
LOG_FORMAT = env("LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        # The id before the level: "LEVEL logger message" stays one run that a grep can match.
        "plain": {"format": "%(asctime)s [%(request_id)s] %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": True,  # ISO 8601, UTC
        },
    },
    "filters": {
        # Every record gets the id of the request it was logged for (accounts/requestid.py).
        "request_id": {"()": "accounts.requestid.RequestIdFilter"},
        # A database outage is logged once a minute (accounts/outage.py), not per request.
        "database_outage": {"()": "accounts.outage.OutageLogFilter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        },
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.request": {"filters": ["database_outage"]},
    },
}
