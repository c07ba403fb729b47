from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """The pages: public home, the signed-in dashboard and the role-gated pages."""

    name = "dashboard"
    default_auto_field = "django.db.models.BigAutoField"
