from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Sign-in against the auth API, token storage, refresh, roles and sessions."""

    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Registers the system checks.
        from . import checks  # noqa: F401
        from .conf import conf

        # A backend shape the settings cannot describe stops the process at
        # start, naming the setting (accounts/shape.py), rather than failing
        # its first sign-in; `manage.py check` reports the same (accounts.E011).
        conf.shape  # noqa: B018 - reading it validates it
