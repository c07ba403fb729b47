"""A form body in a charset other than UTF-8 (accounts/formcharset.py): a 400 page, one log line.

Django raises BadRequest when CSRF reads such a body, and its 400 and 500
handlers read it again; before the middleware that was a 500 from gunicorn
with some 50 KB of chained tracebacks per request.
"""

import re
import secrets

import pytest
import requests
from django.test import Client

from tests.flows import wait_for
from tests.servers import running_app

PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "127.0.0.1",
}
# Production settings redirect plain http; the balancer's header says the browser used https.
HTTPS = {"X-Forwarded-Proto": "https"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app as deployed: gunicorn, production settings, hashed static files."""
    workdir = tmp_path_factory.mktemp("formcharset")
    # No backend call is made by anything here; nothing listens on port 9.
    with running_app(
        workdir, api_url="http://127.0.0.1:9", workers=1, collectstatic=True, **PRODUCTION
    ) as server:
        yield server


def csrf_cookie(app) -> str:
    form = requests.get(f"{app.url}/accounts/login/", headers=HTTPS, timeout=10)
    assert form.status_code == 200
    return form.cookies["csrftoken"]


def post_form(app, path: str, charset: str, token: str) -> requests.Response:
    return requests.post(
        f"{app.url}{path}",
        data=b"email=admin%40example.com&password=x",
        headers={
            **HTTPS,
            "Content-Type": f"application/x-www-form-urlencoded; charset={charset}",
            "Cookie": f"csrftoken={token}",
            "X-CSRFToken": token,
            "Referer": f"https://127.0.0.1{path}",
        },
        allow_redirects=False,
        timeout=10,
    )


def log_of(app, request_id: str, since: int) -> str:
    """The server's log written from `since` until the access line of `request_id`."""
    access_line = re.compile(rf'" 400 .*{request_id}$', re.MULTILINE)
    wait_for(lambda: access_line.search(app.log()[since:]), timeout=10, what="the access line")
    return app.log()[since:]


@pytest.mark.parametrize("charset", ["latin-1", "utf-16", "ISO-8859-1"])
@pytest.mark.parametrize("path", ["/accounts/login/", "/", "/no/such/page/", "/accounts/refresh/"])
def test_a_form_in_another_charset_is_a_400_page_with_one_short_log_line(app, path, charset):
    token = csrf_cookie(app)
    since = len(app.log())

    response = post_form(app, path, charset, token)

    assert response.status_code == 400
    assert "<h1>Bad request</h1>" in response.text
    assert "Token auth demo" in response.text  # the project's page, not gunicorn's or Django's
    request_id = response.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"

    log = log_of(app, request_id, since)
    assert "Traceback" not in log
    assert len(log) < 1000, log[:3000]
    app_lines = [line for line in log.splitlines() if f"[{request_id}]" in line]
    assert len(app_lines) == 1, log
    assert f"WARNING django.request Bad Request: {path}" in app_lines[0]


@pytest.mark.parametrize("charset", ["utf-8", "UTF-8"])
def test_a_utf8_form_goes_on_to_the_page(app, charset):
    token = csrf_cookie(app)
    response = post_form(app, "/no/such/page/", charset, token)
    assert response.status_code == 404


def test_a_script_gets_the_json_error(db, caplog):
    client = Client(enforce_csrf_checks=True)
    client.cookies["csrftoken"] = "a" * 32
    response = client.post(
        "/accounts/refresh/",
        data="x=1",
        content_type="application/x-www-form-urlencoded; charset=latin-1",
        headers={"Accept": "application/json", "X-CSRFToken": "a" * 32},
    )
    assert response.status_code == 400
    assert response.json() == {
        "ok": False,
        "error": "bad_request",
        "message": "Send form data as UTF-8.",
    }
    assert "Traceback" not in caplog.text
    assert [r.getMessage() for r in caplog.records if r.levelname != "DEBUG"] == [
        "Bad Request: /accounts/refresh/"
    ]
