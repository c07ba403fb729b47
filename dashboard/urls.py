from django.urls import path

from accounts.ops import views as ops_views

from . import views

app_name = "dashboard"
urlpatterns = [
    path("", views.index, name="index"),
    path("refresh/", views.refresh_on_server, name="refresh"),
    path("profile/", views.profile, name="profile"),
    # The admin's page is the operations app's health page (AUTH_OPS_ROLES).
    path("admin/", ops_views.health_page, name="admin"),
    path("evaluations/", views.evaluations, name="evaluations"),
]
