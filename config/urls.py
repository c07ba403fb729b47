"""The web app's URLconf. The reference auth API has its own (authapi.urls)."""

from django.contrib import admin
from django.urls import path

from dashboard import views as dashboard_views

urlpatterns = [
    path("", dashboard_views.home, name="home"),
    path("admin/", admin.site.urls),
]
