from django.apps import AppConfig


class OpsConfig(AppConfig):
    """What operators see of the sign-in path: `/metrics`, the health page, `authcheck`.

    Optional: the token core reports its events as signals (accounts/signals.py)
    and imports nothing of this app.
    """

    name = "accounts.ops"
    label = "authops"
    verbose_name = "Sign-in operations"

    def ready(self):
        # Connects the receivers that count the core's events (accounts/ops/metrics.py).
        from . import metrics  # noqa: F401
