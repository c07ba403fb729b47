from django.apps import AppConfig


class UserSessionsConfig(AppConfig):
    """A user's signed-in browsers: the sessions page, sign out everywhere, back-channel sign-out.

    Optional, and works over any session store that keeps its sessions on the
    server (Django's `db` or `cached_db`, or accounts.sessions): its own table
    indexes them (accounts/usersessions/models.py).
    """

    name = "accounts.usersessions"
    label = "usersessions"
    verbose_name = "User sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # The receivers writing a row at sign-in and deleting it at sign-out, and the checks.
        from . import checks, signins  # noqa: F401
