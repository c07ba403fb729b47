from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Sign-in against the auth API, token storage, refresh, roles and sessions."""

    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Registers the system checks, and the receiver recording each sign-in's device.
        from . import checks, devices  # noqa: F401
