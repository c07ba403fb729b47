"""WSGI entry point for gunicorn: `gunicorn config.wsgi` (production settings by default)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

application = get_wsgi_application()

# Fail at start-up, with the fix in the message, rather than answer every page
# with a 500: production serves hashed static files (collectstatic's manifest).
from accounts.checks import require_static_manifest  # noqa: E402 - needs django.setup()

require_static_manifest()
