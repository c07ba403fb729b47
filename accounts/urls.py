from django.urls import path

from . import views
from .decorators import token_exempt

app_name = "accounts"
urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    # Sign-out completes whatever the tokens say: the token middleware leaves it alone.
    path("logout/", token_exempt(views.LogoutView.as_view()), name="logout"),
    path("refresh/", views.refresh, name="refresh"),
]
