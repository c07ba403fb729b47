"""Settings for the pytest suite (`make test`)."""

from .dev import *  # noqa: F403
from .dev import env

DEBUG = False
# A fast hasher: the suite signs in hundreds of times. Production keeps PBKDF2.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Static files come from the finders; no collectstatic before the suite.
STATIC_ROOT = None
WHITENOISE_USE_FINDERS = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
AUTH_BACKEND_TIMEOUT = env.float("AUTH_BACKEND_TIMEOUT", default=3.0)
