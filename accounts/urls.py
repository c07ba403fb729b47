from django.urls import path

from . import backchannel, views

app_name = "accounts"
urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("refresh/", views.refresh, name="refresh"),
    path("backchannel-logout/", backchannel.logout, name="backchannel-logout"),
]
