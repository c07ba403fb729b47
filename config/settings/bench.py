"""Settings for bench/run.py: production settings over plain http on loopback.

BENCH_WITHOUT_TOKEN_MIDDLEWARE=1 drops the token-refresh middleware, so one
run can compare the same page with and without it.
"""

from .production import *  # noqa: F403
from .production import MIDDLEWARE, env

SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
AUTH_COOKIE_SECURE = False
if env.bool("BENCH_WITHOUT_TOKEN_MIDDLEWARE", default=False):
    MIDDLEWARE = [m for m in MIDDLEWARE if m != "accounts.middleware.TokenRefreshMiddleware"]
