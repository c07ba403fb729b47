"""The pages: public home, the dashboard and the role-gated pages."""

from datetime import UTC, datetime

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.conf import conf
from accounts.cookies import REFRESH_EXPIRY_SESSION_KEY
from accounts.roles import role_required
from accounts.tokens import access_token_expiry


def home(request: HttpRequest) -> HttpResponse:
    """Render the public home page."""
    return render(request, "home.html")


def _refresh_expiry(request: HttpRequest) -> datetime | None:
    timestamp = request.session.get(REFRESH_EXPIRY_SESSION_KEY)
    return datetime.fromtimestamp(timestamp, UTC) if timestamp else None


@login_required
def index(request: HttpRequest) -> HttpResponse:
    """Render the profile, roles and when each token expires."""
    context = {
        "access_expires_at": access_token_expiry(request.COOKIES.get(conf.access_cookie)),
        "refresh_expires_at": _refresh_expiry(request),
    }
    return render(request, "dashboard/index.html", context)


@role_required("admin")
def admin_page(request: HttpRequest) -> HttpResponse:
    """Render the page only admins may open."""
    return render(request, "dashboard/admin.html")


@role_required("evaluator", "admin")
def evaluations(request: HttpRequest) -> HttpResponse:
    """Render the page evaluators and admins may open."""
    return render(request, "dashboard/evaluations.html")
