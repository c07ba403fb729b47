"""The health page: who is signed in, and how the sign-in path has been answering."""

from datetime import UTC, datetime

from django.apps import apps
from django.contrib.auth import get_user_model
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache

from .. import shape
from ..conf import conf
from ..roles import role_required
from . import health, metrics, timeline
from .charts import health_charts, latency_summary


def _shape_mismatch() -> dict | None:
    """The last backend answer that did not fit the settings (accounts/shape.py), if any."""
    found = shape.reported()
    if found is None:
        return None
    return {**found, "at": datetime.fromtimestamp(found["at"], UTC)}


def _ordering() -> list[str]:
    # By name where the user model has names (accounts/users.py: any model will do).
    model = get_user_model()
    names = {field.name for field in model._meta.get_fields()}
    wanted = ("last_name", "first_name", model.get_email_field_name())
    return [name for name in wanted if name in names] + ["pk"]


@role_required(lambda: conf.ops_roles_list)
@never_cache
def health_page(request: HttpRequest) -> HttpResponse:
    """Render who is signed in and the auth path's health over the last hour (AUTH_OPS_ROLES).

    The charts are SVG drawn on the server (accounts/ops/charts.py) from the
    per-minute timeline every worker writes (accounts/ops/timeline.py), each
    with a table of the same numbers. The sessions count is the
    `auth_sessions` gauge's (`metrics.active_sessions`), the backend's state
    `/healthz`'s (`health.backend_health`).
    """
    signed_in_users = None
    if apps.is_installed("accounts.usersessions"):
        live = Q(signed_in_sessions__expires_at__gt=timezone.now())
        signed_in_users = (
            get_user_model()
            .objects.annotate(session_count=Count("signed_in_sessions", filter=live))
            .filter(session_count__gt=0)
            .order_by(*_ordering())
        )
    sessions = metrics.active_sessions()
    timeline.flush()  # this worker's own counts; the others' come within FLUSH_INTERVAL
    recorded = timeline.read()
    context = {
        "roles": conf.ops_roles_list,
        "signed_in_users": signed_in_users,
        "sessions_total": sum(sessions.values()) if sessions is not None else None,
        "sessions_by_storage": sorted(
            ((storage or "unknown", n) for storage, n in (sessions or {}).items()),
        ),
        "backend": health.backend_health(),
        "shape_mismatch": _shape_mismatch(),
        "timeline_available": recorded.available,
        "charts": health_charts(recorded),
        "latency_summary": latency_summary(recorded),
        "time_zone": timezone.get_current_timezone_name(),
    }
    return render(request, "authops/health.html", context)
