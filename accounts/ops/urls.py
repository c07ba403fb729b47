from django.urls import path

from . import views

app_name = "authops"
urlpatterns = [
    path("health/", views.health_page, name="health"),
]
