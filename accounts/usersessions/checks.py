"""System checks of the user sessions app: its middleware, where it must be."""

from django.conf import settings
from django.core.checks import Error, register

MIDDLEWARE = "accounts.usersessions.middleware.UserSessionMiddleware"
AFTER = "django.contrib.sessions.middleware.SessionMiddleware"


@register()
def check_middleware(app_configs=None, **kwargs):
    """Without its middleware, "last seen" and the sessions' expiry would never move."""
    middleware = list(settings.MIDDLEWARE)
    if MIDDLEWARE not in middleware or (
        AFTER in middleware and middleware.index(MIDDLEWARE) < middleware.index(AFTER)
    ):
        return [
            Error(
                f"accounts.usersessions is installed but {MIDDLEWARE} is not in MIDDLEWARE "
                "after SessionMiddleware: the sessions page would show every browser as last "
                "seen at sign-in and drop sessions the store still keeps.",
                hint=f'Add "{MIDDLEWARE}" to MIDDLEWARE after AuthenticationMiddleware '
                "(docs/installation.md).",
                id="usersessions.E001",
            )
        ]
    return []
