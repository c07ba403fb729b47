"""The pages: public home, the dashboard and the role-gated pages (the admin's is accounts.ops')."""

import logging
from datetime import UTC, datetime

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from accounts.client import get_client
from accounts.conf import conf
from accounts.exceptions import BackendError, SessionEnded
from accounts.responses import json_view
from accounts.roles import role_required
from accounts.state import TokenState

logger = logging.getLogger(__name__)


def home(request: HttpRequest) -> HttpResponse:
    """Render the public home page."""
    return render(request, "home.html", {"token_storage": conf.token_storage})


def _when(timestamp: float | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, UTC) if timestamp else None


@login_required
def index(request: HttpRequest) -> HttpResponse:
    """Render the profile, roles and when each token expires (as the session recorded them)."""
    record = TokenState.of(request).load()
    context = {
        "access_expires_at": _when(record.access_expires_at if record else None),
        "refresh_expires_at": _when(record.refresh_expires_at if record else None),
        "token_storage": conf.token_storage,
    }
    return render(request, "dashboard/index.html", context)


@require_POST
@login_required
def refresh_on_server(request: HttpRequest) -> HttpResponse:
    """The demo's server-side refresh (a form's POST): refresh, then back to the dashboard."""
    try:
        TokenState.of(request).renew()
    except SessionEnded:
        return redirect("accounts:login")
    except BackendError:
        messages.error(request, "The sign-in service did not answer; your session is unchanged.")
    else:
        messages.success(request, "Tokens refreshed on the server.")
    return redirect("dashboard:index")


@json_view
@never_cache
@login_required
def profile(request: HttpRequest) -> JsonResponse:
    """The profile read server-side through the backend client (`GET users/me`).

    A 401 refreshes and replays inside the client; what it cannot cure ends up
    in the middleware's `process_exception` (401 JSON or 503).
    """
    me = get_client().me(TokenState.of(request))
    return JsonResponse(
        {
            "id": me.id,
            "firstName": me.first_name,
            "lastName": me.last_name,
            "email": me.email,
            "roles": list(me.roles),
        }
    )


@role_required(lambda: settings.DEMO_EVALUATION_ROLES)
def evaluations(request: HttpRequest) -> HttpResponse:
    """Render the page evaluators and admins may open."""
    return render(request, "dashboard/evaluations.html")
