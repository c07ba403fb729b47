"""The URLconf of the reference auth API process: the API and nothing else."""

from django.urls import path, re_path

from . import views

urlpatterns = [
    path("auth/login", views.login, name="authapi-login"),
    path("auth/refresh", views.refresh, name="authapi-refresh"),
    path("auth/logout", views.logout, name="authapi-logout"),
    path("users/me", views.me, name="authapi-me"),
    path("_stats", views.stats_view, name="authapi-stats"),
    path("_faults", views.faults_view, name="authapi-faults"),
    re_path(r"", views.unknown_path),
]

handler400 = views.bad_request
handler404 = views.not_found
handler500 = views.server_error
