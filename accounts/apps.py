from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Sign-in against the auth API, token cookies, refresh and roles."""

    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import checks  # noqa: F401 - registers the system checks
