"""Development settings: `make run` and `manage.py runserver` on a laptop."""

from .base import *  # noqa: F403
from .base import INSTALLED_APPS, env

# The reference auth API and its commands (runauthapi, seed_demo_users, apiuser).
AUTHAPI_ENABLED = env.bool("AUTHAPI_ENABLED", default=True)
if AUTHAPI_ENABLED and "authapi" not in INSTALLED_APPS:
    INSTALLED_APPS = [*INSTALLED_APPS, "authapi"]

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env(
    "SECRET_KEY",
    default="django-insecure-dev-only-key-never-use-in-production-0b8c1f6e",
)
AUTHAPI_JWT_SECRET = env("AUTHAPI_JWT_SECRET", default="dev-only-jwt-secret-change-me-0b8c1f6e")

# Plain http://127.0.0.1 in development: browsers drop Secure cookies there.
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)
AUTH_COOKIE_SECURE = env.bool("AUTH_COOKIE_SECURE", default=False)
