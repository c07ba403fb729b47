from django.urls import path

from . import views

app_name = "dashboard"
urlpatterns = [
    path("", views.index, name="index"),
    path("refresh/", views.refresh_on_server, name="refresh"),
    path("profile/", views.profile, name="profile"),
    path("evaluations/", views.evaluations, name="evaluations"),
]
