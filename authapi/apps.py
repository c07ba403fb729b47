from django.apps import AppConfig


class AuthApiConfig(AppConfig):
    """The reference auth API: a NestJS-style token issuer served by `runauthapi`."""

    name = "authapi"
    verbose_name = "Reference auth API"
    default_auto_field = "django.db.models.BigAutoField"
