from django.urls import path

from . import backchannel, views

app_name = "usersessions"
urlpatterns = [
    path("backchannel-logout/", backchannel.logout, name="backchannel-logout"),
    path("sessions/", views.sessions, name="sessions"),
    path("sessions/end-others/", views.end_others, name="sessions-end-others"),
    path("sessions/<str:session_id>/end/", views.end, name="session-end"),
    path("sessions/users/<int:user_id>/", views.user_sessions, name="user-sessions"),
    path(
        "sessions/users/<int:user_id>/end-all/",
        views.user_sessions_end_all,
        name="user-sessions-end-all",
    ),
    path(
        "sessions/users/<int:user_id>/<str:session_id>/end/",
        views.user_session_end,
        name="user-session-end",
    ),
]
