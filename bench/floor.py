"""The floor of this stack for bench/run.py's (h): a bare Django view relaying /users/me.

Settings, URLconf, view and WSGI application in one module
(`DJANGO_SETTINGS_MODULE=bench.floor`, served as `bench.floor:application` by
gunicorn with the project's gunicorn.conf.py). No middleware, no session, no
database: the view forwards the request's `access_token` cookie to the
backend with a pooled `requests.Session` and answers the backend's body. What
the project's proxy costs beyond it is the project's own work: reading the
session, checking the pair, the middleware, the allow-list.

`/api/users/me/after-session-read` is the same relay after one read of the
request's session row from PostgreSQL (its `sessionid` cookie, a persistent
connection per thread, as Django keeps them): the least the project's
invariant costs, since the server decides on every request whether the
session still stands.

    API_BASEURL   the backend (required)
    DATABASE_URL  the project's PostgreSQL, for the second view
"""

import os
import threading

import psycopg
import requests
from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse
from django.urls import path

SECRET_KEY = "bench-floor-" + "x" * 40
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
ROOT_URLCONF = __name__
MIDDLEWARE: list[str] = []
INSTALLED_APPS: list[str] = []
DATABASES: dict = {}
USE_TZ = True

API = os.environ.get("API_BASEURL", "")
_http = requests.Session()
_http.trust_env = False


def relay(request):
    answer = _http.get(
        f"{API}/users/me",
        cookies={"access_token": request.COOKIES.get("access_token", "")},
        timeout=(3, 10),
    )
    return HttpResponse(
        answer.content,
        status=answer.status_code,
        content_type=answer.headers.get("Content-Type", "application/json"),
    )


_threads = threading.local()
SESSION_ROW = (
    "SELECT session_data, user_id FROM accounts_session"
    " WHERE session_key = %s AND expire_date > now()"
)


def relay_after_session_read(request):
    connection = getattr(_threads, "connection", None)
    if connection is None:
        connection = _threads.connection = psycopg.connect(
            os.environ["DATABASE_URL"], autocommit=True, cursor_factory=psycopg.ClientCursor
        )
    with connection.cursor() as cursor:
        cursor.execute(SESSION_ROW, [request.COOKIES.get("sessionid", "")])
        if cursor.fetchone() is None:
            return HttpResponse(status=401)
    return relay(request)


urlpatterns = [
    path("api/users/me", relay),
    path("api/users/me/after-session-read", relay_after_session_read),
]

application = get_wsgi_application()
