"""Request ids (accounts/requestid.py): on each response, in each log line, sent to the backend."""

import json
import logging
import os
import re
import subprocess
import sys
import threading

import pytest
from django.http import HttpResponse
from django.test import RequestFactory

from accounts.requestid import RequestIdFilter, RequestIdMiddleware, current
from authapi.demo import DEMO_USERS
from tests import fakes
from tests.flows import post_login, wait_until_access_expired
from tests.servers import ROOT, running_app, running_authapi, wait_for_log

LOGIN = "/accounts/login/"
ADMIN_FORM = {"email": "admin@example.com", "password": "admin-demo-pass"}
MADE_ID = re.compile(r"[0-9a-f]{32}")
ADMIN = DEMO_USERS[0]


def request_id(response) -> str:
    return response.headers["X-Request-ID"]


class Collected(logging.Handler):
    """Keep every record, filtered as the console handler filters (config/settings/base.py)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.addFilter(RequestIdFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records(caplog):
    """Every record logged during the test, DEBUG and `django.*` (which does not propagate) too."""
    caplog.set_level(logging.DEBUG)
    handler = Collected()
    loggers = [logging.getLogger(), logging.getLogger("django")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler.records
    for logger in loggers:
        logger.removeHandler(handler)


class TestTheId:
    def test_every_response_gets_a_new_id_and_the_request_knows_it(self, client, db):
        first = client.get(LOGIN)
        second = client.get(LOGIN)

        assert MADE_ID.fullmatch(request_id(first))
        assert MADE_ID.fullmatch(request_id(second))
        assert request_id(first) != request_id(second)
        assert first.wsgi_request.request_id == request_id(first)

    def test_error_pages_carry_it_too(self, client, db):
        assert MADE_ID.fullmatch(request_id(client.get("/no-such-page/")))

    @pytest.mark.parametrize("incoming", ["edge-7f3a.b_c:9", "a" * 128, "1-67891233-abcdef012345"])
    def test_a_trusted_proxys_id_is_kept(self, client, db, settings, incoming):
        settings.AUTH_TRUSTED_PROXY_COUNT = 1
        settings.AUTH_TRUSTED_PROXIES = ["127.0.0.1"]  # the test client's REMOTE_ADDR
        response = client.get(LOGIN, headers={"X-Request-ID": incoming})
        assert request_id(response) == incoming
        assert response.wsgi_request.request_id == incoming

    def test_without_a_trusted_proxy_the_clients_id_is_replaced(self, client, db, settings):
        settings.AUTH_TRUSTED_PROXY_COUNT = 0
        settings.AUTH_TRUSTED_PROXIES = ["127.0.0.1"]
        response = client.get(LOGIN, headers={"X-Request-ID": "chosen-by-the-client"})
        assert MADE_ID.fullmatch(request_id(response))

    @pytest.mark.parametrize("trusted", [[], ["10.0.0.0/8", "192.0.2.1"]])
    def test_from_a_peer_not_in_the_trusted_proxies_the_id_is_replaced(
        self, client, db, settings, trusted
    ):
        settings.AUTH_TRUSTED_PROXY_COUNT = 1
        settings.AUTH_TRUSTED_PROXIES = trusted
        response = client.get(LOGIN, headers={"X-Request-ID": "chosen-by-the-client"})
        assert MADE_ID.fullmatch(request_id(response))

    @pytest.mark.parametrize(
        "incoming",
        [
            "abc\r\nSet-Cookie: sessionid=planted",
            "abc\nX-Injected: 1",
            "abc\n",
            "abc def",
            "abc;def",
            "<script>",
            "idé",
            "日本",
            "a" * 129,
            "a" * 1000,
            "",
        ],
        ids=[
            "crlf-injection",
            "lf-injection",
            "trailing-newline",
            "space",
            "semicolon",
            "markup",
            "latin-1",
            "non-latin",
            "129-chars",
            "1000-chars",
            "empty",
        ],
    )
    def test_a_malformed_id_is_replaced_even_from_a_trusted_proxy(
        self, client, db, settings, incoming
    ):
        settings.AUTH_TRUSTED_PROXY_COUNT = 1
        settings.AUTH_TRUSTED_PROXIES = ["127.0.0.1"]
        response = client.get(LOGIN, headers={"X-Request-ID": incoming})

        assert MADE_ID.fullmatch(request_id(response))
        assert "X-Injected" not in response.headers
        assert "planted" not in str(response.cookies)

    def test_the_decision_alone(self, settings):
        middleware = RequestIdMiddleware(lambda request: HttpResponse())
        factory = RequestFactory()
        settings.AUTH_TRUSTED_PROXY_COUNT = 2
        settings.AUTH_TRUSTED_PROXIES = ["127.0.0.0/8"]
        assert middleware.get_request_id(factory.get("/", headers={"X-Request-ID": "x-1"})) == "x-1"
        assert MADE_ID.fullmatch(
            middleware.get_request_id(
                factory.get("/", headers={"X-Request-ID": "x-1"}, REMOTE_ADDR="192.0.2.7")
            )
        )
        assert MADE_ID.fullmatch(middleware.get_request_id(factory.get("/")))
        settings.AUTH_TRUSTED_PROXY_COUNT = 0
        assert MADE_ID.fullmatch(
            middleware.get_request_id(factory.get("/", headers={"X-Request-ID": "x-1"}))
        )

    def test_it_is_first_in_middleware(self, settings):
        assert settings.MIDDLEWARE[0] == "accounts.requestid.RequestIdMiddleware"


class TestTheContext:
    def test_none_outside_a_request(self):
        assert current() is None

    def test_the_view_sees_it_until_the_response_is_closed(self, db):
        # `db`: close() sends request_finished, which looks at the database connection.
        seen = []

        def view(request):
            seen.append((current(), request.request_id))
            return HttpResponse()

        response = RequestIdMiddleware(view)(RequestFactory().get("/"))

        assert seen == [(request_id(response), request_id(response))]
        # Django's handler logs a 4xx/5xx after the middleware returns: still this request's.
        assert current() == request_id(response)
        response.close()
        assert current() is None

    def test_an_exception_clears_it(self):
        def view(request):
            assert current() == request.request_id
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            RequestIdMiddleware(view)(RequestFactory().get("/"))
        assert current() is None

    def test_clear_after_a_request_through_the_client(self, client, db):
        client.get(LOGIN)
        assert current() is None
        client.get("/no-such-page/")
        assert current() is None


class TestLogs:
    def test_every_record_of_a_sign_in_carries_the_requests_id(self, client, db, backend, records):
        fakes.stub_login(backend, status=401, json={"message": "Invalid credentials"})

        response = client.post(LOGIN, ADMIN_FORM)

        assert "Invalid email or password" in response.content.decode()
        messages = [record.getMessage() for record in records]
        assert "Sign-in refused by the auth backend" in messages
        assert {record.request_id for record in records} == {request_id(response)}

    def test_djangos_4xx_warning_after_the_middleware_carries_it(self, client, db, records):
        response = client.get("/no-such-page/")

        warning = next(r for r in records if r.name == "django.request")
        assert warning.getMessage() == "Not Found: /no-such-page/"
        assert warning.request_id == request_id(response)

    def test_outside_a_request_the_id_is_a_dash(self):
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
        assert RequestIdFilter().filter(record) is True
        assert record.request_id == "-"

    def test_the_console_handler_writes_it(self, db):
        console = next(h for h in logging.getLogger().handlers if h.get_name() == "console")
        assert any(isinstance(f, RequestIdFilter) for f in console.filters)
        lines = []

        def view(request):
            record = logging.LogRecord("accounts.x", logging.INFO, __file__, 1, "hi", None, None)
            console.filter(record)
            lines.append(console.format(record))
            return HttpResponse()

        response = RequestIdMiddleware(view)(RequestFactory().get("/"))
        response.close()
        assert lines[0].endswith(f" [{request_id(response)}] INFO accounts.x hi")


def settings_in_a_fresh_process(**env: str) -> subprocess.CompletedProcess:
    """Configure logging from the settings in a new interpreter; log one exception."""
    code = (
        "import django, logging; django.setup()\n"
        "try:\n    1 / 0\n"
        "except ZeroDivisionError:\n    logging.getLogger('accounts.x').exception('it broke')\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LOG_", "DJANGO"))}
    clean.update(DJANGO_SETTINGS_MODULE="config.settings.test", ENV_FILE=os.devnull, **env)
    return subprocess.run(
        [sys.executable, "-c", code],
        env=clean,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestLogFormat:
    def test_json_is_one_object_a_line_with_the_exception(self):
        result = settings_in_a_fresh_process(LOG_FORMAT="json")

        assert result.returncode == 0, result.stderr
        [line] = result.stderr.splitlines()
        logged = json.loads(line)
        assert logged["timestamp"].endswith("+00:00")
        assert {k: logged[k] for k in ("level", "logger", "message", "request_id")} == {
            "level": "ERROR",
            "logger": "accounts.x",
            "message": "it broke",
            "request_id": "-",
        }
        assert "ZeroDivisionError" in logged["exc_info"]

    def test_plain_is_the_default(self):
        result = settings_in_a_fresh_process()

        assert result.returncode == 0, result.stderr
        assert " [-] ERROR accounts.x it broke\n" in result.stderr
        assert "ZeroDivisionError" in result.stderr

    def test_anything_else_fails_at_start_naming_the_setting(self):
        result = settings_in_a_fresh_process(LOG_FORMAT="xml")

        assert result.returncode != 0
        assert "ImproperlyConfigured: LOG_FORMAT must be plain or json, not 'xml'" in result.stderr


class TestSentToTheBackend:
    def test_on_login_and_users_me(self, client, db, backend):
        login = fakes.stub_login(backend)
        me = fakes.stub_me(backend, "admin")

        response = client.post(LOGIN, ADMIN_FORM)

        assert response.status_code == 302
        sent = [call.request.headers.get("X-Request-ID") for call in [*login.calls, *me.calls]]
        assert sent == [request_id(response)] * 2

    def test_on_the_refresh_made_in_the_pool_thread(self, signed_in, backend, settle):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        seen = []

        def answer(status, headers, body):
            def callback(request):
                seen.append(
                    (
                        request.path_url,
                        threading.current_thread().name.split("_")[0],
                        request.headers.get("X-Request-ID"),
                    )
                )
                return status, headers, body

            return callback

        tokens = fakes.token_headers(fakes.access_jwt(), "refresh-2")
        backend.add_callback("POST", f"{fakes.BASE}/auth/refresh", callback=answer(200, tokens, ""))
        profile = json.dumps(fakes.PROFILES["admin"])
        json_type = [("Content-Type", "application/json")]
        backend.add_callback(
            "GET", f"{fakes.BASE}/users/me", callback=answer(200, json_type, profile)
        )

        response = client.get("/dashboard/profile/")  # its call waits for the refresh

        assert response.status_code == 200
        assert response.cookies["refresh_token"].value == "refresh-2"
        assert seen == [
            ("/auth/refresh", "token-refresh", request_id(response)),
            ("/users/me", "token-refresh", request_id(response)),
            ("/users/me", threading.current_thread().name, request_id(response)),  # the view's
        ]

    def test_no_header_outside_a_request(self, backend):
        from accounts.client import get_client

        login = fakes.stub_login(backend)
        get_client().login("admin@example.com", "admin-demo-pass")
        assert "X-Request-ID" not in login.calls[0].request.headers


def test_json_logs_over_real_http(tmp_path):
    """The app under gunicorn with LOG_FORMAT=json: every line parses, carrying its request's id."""
    with (
        running_authapi(tmp_path, AUTHAPI_ACCESS_TTL="4") as api,
        running_app(tmp_path, api_url=api.url, LOG_FORMAT="json", LOG_LEVEL="DEBUG") as app,
    ):
        _, wrong = post_login(app.url, ADMIN.email, "not-the-password")
        browser, signed = post_login(app.url, ADMIN.email, ADMIN.password)
        assert "Invalid email or password" in wrong.text
        assert signed.status_code == 302
        issued = {browser.cookies["access_token"], browser.cookies["refresh_token"]}
        wait_until_access_expired(browser)
        # A view that calls the backend: it waits for the refresh the middleware starts.
        refreshed = browser.get(f"{app.url}/dashboard/profile/", timeout=30)
        assert refreshed.status_code == 200
        issued |= {browser.cookies["access_token"], browser.cookies["refresh_token"]}
        ids = {name: request_id(r) for name, r in [("wrong", wrong), ("signed", signed)]}
        ids["refreshed"] = request_id(refreshed)
        wait_for_log(app, re.escape(ids["refreshed"]) + r"\n")  # its access line
        log = app.log()

    logged, other = [], []
    for line in log.splitlines():
        # Every line that looks like JSON is JSON (json.loads raises otherwise).
        (logged if line.startswith("{") else other).append(line)
    logged = [json.loads(line) for line in logged]
    assert logged
    for record in logged:
        assert {"timestamp", "level", "logger", "message", "request_id"} <= set(record)
    # The rest is gunicorn's own: its error log, and access lines ending in the request's id.
    gunicorn_line = re.compile(r"\[[^]]+\] \[\d+\] \[[A-Z]+\] |127\.0\.0\.1 - - \[")
    assert [line for line in other if not gunicorn_line.match(line)] == []

    def of(name: str) -> list[dict]:
        return [record for record in logged if record["request_id"] == ids[name]]

    assert {"logger": "accounts.backends", "message": "Sign-in refused by the auth backend"} in [
        {"logger": r["logger"], "message": r["message"]} for r in of("wrong")
    ]
    assert "POST /auth/login answered 201" in [r["message"] for r in of("signed")]
    # The refresh ran in the pool thread, for the request that needed it.
    assert "POST /auth/refresh answered 200" in [r["message"] for r in of("refreshed")]
    for request_id_ in ids.values():
        [access_line] = [line for line in other if line.endswith(f" {request_id_}")]
        assert access_line.startswith("127.0.0.1 - - [")
    assert all(r["request_id"] == "-" or MADE_ID.fullmatch(r["request_id"]) for r in logged)
    # No token, nor the password, anywhere in the log.
    for secret in issued | {ADMIN.password}:
        assert secret not in log
