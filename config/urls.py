"""The web app's URLconf. The reference auth API has its own (authapi.urls)."""

from django.contrib import admin
from django.urls import include, path, re_path

from accounts import admin as accounts_admin
from accounts import proxy
from accounts.ops import health, metrics
from dashboard import views as dashboard_views

urlpatterns = [
    path("", dashboard_views.home, name="home"),
    path("accounts/", include("accounts.urls")),
    path("accounts/", include("accounts.usersessions.urls")),
    # The admin's page is the operations app's health page (AUTH_OPS_ROLES).
    path("dashboard/admin/", include("accounts.ops.urls")),
    path("dashboard/", include("dashboard.urls")),
    path("healthz", health.healthz, name="healthz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    re_path(r"^api/(?P<path>.*)$", proxy.api_proxy, name="api-proxy"),
    # Django's admin signs in through the auth API like every other page; the
    # signed-in who may not enter get the 403 page, not a sign-in loop.
    path("admin/login/", accounts_admin.login, name="admin-login"),
    path("admin/", admin.site.urls),
]

# A database that does not answer gets a 503 page, not a 500 (accounts/outage.py).
handler500 = "accounts.outage.server_error"
