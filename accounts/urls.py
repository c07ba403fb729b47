from django.urls import path

from . import backchannel, sessions_views, views
from .decorators import token_exempt

app_name = "accounts"
urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    # Sign-out completes whatever the tokens say: the token middleware leaves it alone.
    path("logout/", token_exempt(views.LogoutView.as_view()), name="logout"),
    path("refresh/", views.refresh, name="refresh"),
    path("backchannel-logout/", backchannel.logout, name="backchannel-logout"),
    path("sessions/", sessions_views.sessions, name="sessions"),
    path("sessions/end-others/", sessions_views.end_others, name="sessions-end-others"),
    path("sessions/<str:session_id>/end/", sessions_views.end, name="session-end"),
    path("sessions/users/<int:user_id>/", sessions_views.user_sessions, name="user-sessions"),
    path(
        "sessions/users/<int:user_id>/end-all/",
        sessions_views.user_sessions_end_all,
        name="user-sessions-end-all",
    ),
    path(
        "sessions/users/<int:user_id>/<str:session_id>/end/",
        sessions_views.user_session_end,
        name="user-session-end",
    ),
]
