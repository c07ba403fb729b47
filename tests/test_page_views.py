"""What a person meets around signing in and out, in-process: the sign-out page, a
safe `next`, the CSRF page, why the sign-in form is shown, the admin site's 403,
messages, and `Cache-Control` on signed-in pages."""

import re
from concurrent.futures import wait
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.contrib.auth import SESSION_KEY
from django.db import OperationalError
from django.test import Client

from accounts import sessions as session_store
from accounts.reasons import Reason
from accounts.views import wait_phrase
from tests import fakes

LOGIN = "/accounts/login/"
LOGOUT = "/accounts/logout/"
ADMIN_FORM = {"email": "admin@example.com", "password": "admin-demo-pass"}
HOSTILE_NEXT = [
    "// ",
    "//evil.example",
    " //evil.example",
    "\t//evil.example",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "https://evil.example/",
    "http:evil.example",
    "javascript:alert(1)",
    "//evil.example/%2F..",
]


def configured_store():
    """The SessionStore class SESSION_ENGINE names (its own `load`, whichever store it is)."""
    from importlib import import_module

    from django.conf import settings

    return import_module(settings.SESSION_ENGINE).SessionStore


@pytest.fixture
def as_user(client, db):
    def sign_in(who: str = "admin"):
        return fakes.sign_in_client(client, who, access=fakes.access_jwt())

    return sign_in


def messages_on(body: str) -> list[str]:
    return re.findall(r'<li class="message[^"]*">([^<]*)</li>', body)


def reason_on(body: str) -> str | None:
    found = re.search(r'<p class="notice" id="sign-in-reason">([^<]*)</p>', body)
    return found[1] if found else None


# --- sign-out: GET asks, POST signs out, `next` only when safe --------------------------


class TestSignOutPage:
    def test_get_shows_the_button_and_keeps_a_safe_next(self, as_user, backend):
        client = as_user("admin")
        response = client.get(LOGOUT, {"next": "/dashboard/evaluations/"})
        body = response.content.decode()
        assert response.status_code == 200
        assert "Ada Admin" in body
        form = re.search(r'<form [^>]*id="sign-out-form">.*?</form>', body, re.S)[0]
        assert 'name="csrfmiddlewaretoken"' in form
        assert '<input type="hidden" name="next" value="/dashboard/evaluations/">' in form
        assert SESSION_KEY in client.session
        assert len(backend.calls) == 0

    def test_get_drops_a_hostile_next(self, as_user, backend):
        body = as_user("admin").get(LOGOUT, {"next": "//evil.example"}).content.decode()
        assert 'name="next"' not in body

    def test_anonymous_get_goes_home(self, client, db):
        response = client.get(LOGOUT)
        assert (response.status_code, response["Location"]) == (302, "/")

    @pytest.mark.parametrize("next_url", HOSTILE_NEXT)
    def test_post_never_follows_a_hostile_next(self, as_user, backend, next_url):
        fakes.stub_logout(backend)
        response = as_user("admin").post(LOGOUT, {"next": next_url})
        assert (response.status_code, response["Location"]) == (302, "/")

    def test_post_follows_a_safe_next_stripped(self, as_user, backend):
        fakes.stub_logout(backend)
        response = as_user("admin").post(LOGOUT, {"next": " /accounts/login/?next=/x/ "})
        assert response["Location"] == "/accounts/login/?next=/x/"


class TestSignInNext:
    @pytest.mark.parametrize("next_url", HOSTILE_NEXT)
    def test_sign_in_never_follows_a_hostile_next(self, client, db, backend, next_url):
        fakes.stub_login(backend)
        fakes.stub_me(backend, "admin")
        response = client.post(LOGIN, {**ADMIN_FORM, "next": next_url})
        assert (response.status_code, response["Location"]) == (302, "/dashboard/")


# --- sign-out while the database does not answer ----------------------------------------


class TestSignOutWithoutDatabase:
    @pytest.fixture
    def database_down(self, monkeypatch):
        def refuse(self):
            raise OperationalError("connection refused")

        def down():
            monkeypatch.setattr(configured_store(), "load", refuse)

        return down

    def test_the_browser_is_signed_out_and_the_pair_revoked(self, as_user, backend, database_down):
        client = as_user("admin")
        logout = fakes.stub_logout(backend)
        database_down()

        response = client.post(LOGOUT)

        assert (response.status_code, response["Location"]) == (302, "/")
        for name in ("sessionid", "access_token", "refresh_token"):
            assert response.cookies[name].value == "", name
            assert response.cookies[name]["max-age"] == 0, name
        assert "refresh_token=refresh-1" in logout.calls[0].request.headers["Cookie"]

    def test_the_backend_down_too_is_said(self, as_user, backend, database_down, monkeypatch):
        client = as_user("admin")
        backend.post(f"{fakes.BASE}/auth/logout", body=requests.ConnectionError())
        database_down()

        response = client.post(LOGOUT)
        assert response.status_code == 302
        assert response.cookies["sessionid"]["max-age"] == 0
        monkeypatch.undo()  # the database is back
        page = client.get("/").content.decode()
        assert "sign out this browser&#x27;s old session under “Your sessions”" in page

    def test_scripts_get_json(self, as_user, backend, database_down):
        client = as_user("admin")
        fakes.stub_logout(backend)
        database_down()
        response = client.post(LOGOUT, headers={"Accept": "application/json"})
        assert response.json() == {
            "ok": True,
            "revocation": "done",
            "message": "You have been signed out.",
        }


# --- the CSRF failure page ----------------------------------------------------------------


class TestCsrfFailurePage:
    def test_a_stale_sign_in_form_gets_a_page_with_a_way_back(self, db):
        client = Client(enforce_csrf_checks=True)
        response = client.post(LOGIN, {**ADMIN_FORM, "next": "/dashboard/evaluations/"})
        body = response.content.decode()
        assert response.status_code == 403
        assert "<h1>This form has expired</h1>" in body
        assert "css/site.css" in body
        back = re.search(r'<a class="button" href="([^"]+)" id="csrf-back">', body)[1]
        location = urlsplit(back.replace("&amp;", "&"))
        assert location.path == LOGIN
        assert parse_qs(location.query) == {"next": ["/dashboard/evaluations/"]}

    @pytest.mark.parametrize("next_url", HOSTILE_NEXT)
    def test_a_hostile_next_is_not_carried(self, db, next_url):
        client = Client(enforce_csrf_checks=True)
        body = client.post(LOGIN, {**ADMIN_FORM, "next": next_url}).content.decode()
        assert '<a class="button" href="/accounts/login/" id="csrf-back">' in body

    def test_over_https_a_plain_http_next_is_not_carried(self, db):
        client = Client(enforce_csrf_checks=True)
        next_url = "http://testserver/dashboard/evaluations/"
        body = client.post(LOGIN, {**ADMIN_FORM, "next": next_url}, secure=True).content.decode()
        assert '<a class="button" href="/accounts/login/" id="csrf-back">' in body
        # The same form over plain HTTP keeps it: it is this host's page.
        body = client.post(LOGIN, {**ADMIN_FORM, "next": next_url}).content.decode()
        assert "id=\"csrf-back\"" in body and "evaluations" in body

    def test_scripts_still_get_json(self, db):
        client = Client(enforce_csrf_checks=True)
        response = client.post(LOGIN, ADMIN_FORM, headers={"Accept": "application/json"})
        assert response.status_code == 403
        assert response.json()["error"] == "csrf"


# --- why the sign-in form is shown, and messages ------------------------------------------


class TestWhySignIn:
    def test_a_protected_page_says_why(self, client, db):
        response = client.get("/dashboard/evaluations/", follow=True)
        assert response.redirect_chain[-1][0] == f"{LOGIN}?next=/dashboard/evaluations/"
        assert reason_on(response.content.decode()) == "Please sign in to see that page."

    def test_a_plain_visit_says_nothing(self, client, db):
        assert reason_on(client.get(LOGIN).content.decode()) is None

    def test_a_session_ended_elsewhere_says_so(self, client, db):
        # The session's row is gone (the sessions page, a back-channel sign-out);
        # the browser still holds its token cookies.
        client.cookies["refresh_token"] = "refresh-1"
        response = client.get("/dashboard/", follow=True)
        body = response.content.decode()
        assert reason_on(body) == "Your session has ended; please sign in again."

    def test_a_refused_refresh_says_so_once(self, as_user, backend, settle):
        client = as_user("admin")
        fakes.edit_record(client, access_expires_at=1.0)
        fakes.stub_refresh(backend, status=401)
        response = client.get("/dashboard/")
        if response.status_code == 200:
            # Served from the session while the refresh ran; its outcome meets the next request.
            wait(settle, timeout=30)
            response = client.get("/dashboard/")
        assert response.status_code == 302
        assert response["Location"].startswith(LOGIN)
        body = client.get(response["Location"]).content.decode()
        assert messages_on(body) == ["Your session has ended; please sign in again."]
        assert reason_on(body) is None, "the message says why already"

    def test_every_reason_a_request_ends_for_has_a_message(self):
        """Only the sessions ended for someone not at this browser go without a sentence."""
        silent = {reason for reason in Reason if reason.message is None}
        assert silent == {Reason.BACKCHANNEL, Reason.ENDED_ELSEWHERE}

    def test_signing_in_says_who(self, client, db, backend):
        fakes.stub_login(backend)
        fakes.stub_me(backend, "admin")
        response = client.post(LOGIN, ADMIN_FORM, follow=True)
        assert messages_on(response.content.decode()) == ["Signed in as Ada Admin."]

    def test_a_signed_in_visitor_is_told_who_is_signed_in(self, as_user):
        body = as_user("evaluator").get(LOGIN, {"next": "/dashboard/evaluations/"}).content
        body = body.decode()
        assert "You are signed in as <strong>Eve Evaluator</strong>" in body
        assert '<a class="button" href="/dashboard/evaluations/">Continue</a>' in body
        assert 'href="/accounts/logout/"' in body
        assert 'type="password"' not in body

    def test_a_refused_account_is_told_what_to_do(self, client, db, backend):
        fakes.stub_login(backend)
        fakes.stub_me(backend, "viewer")
        fakes.stub_logout(backend)
        body = client.post(LOGIN, ADMIN_FORM).content.decode()
        assert (
            "This account does not have access. Sign in with another account, or ask the "
            "site&#x27;s administrator to give this one access."
        ) in body

    def test_field_errors_are_what_the_inputs_point_at(self, client, db):
        body = client.post(LOGIN, {"email": "not-an-email", "password": ""}).content.decode()
        for name in ("email", "password"):
            assert f'aria-describedby="id_{name}_error"' in body
            assert f'<div class="field-error" id="id_{name}_error">' in body


class TestThrottleWording:
    def test_under_a_minute_in_seconds(self):
        assert wait_phrase(1) == "1 second"
        assert wait_phrase(59) == "59 seconds"

    @pytest.mark.parametrize(("seconds", "minutes"), [(60, "1 minute"), (295, "5 minutes")])
    def test_longer_in_minutes_with_the_time(self, seconds, minutes):
        assert re.fullmatch(rf"about {minutes} \(until \d\d:\d\d UTC\)", wait_phrase(seconds))


# --- Django's admin site ------------------------------------------------------------------


class TestAdminSite:
    def test_a_signed_in_non_admin_gets_the_403_page_not_a_sign_in_loop(self, as_user):
        client = as_user("evaluator")
        response = client.get("/admin/", follow=True)
        body = response.content.decode()
        assert response.status_code == 403
        assert "Django&#x27;s admin site is for the site&#x27;s administrators." in body
        assert "This page needs the role “admin”." in body
        assert 'type="password"' not in body

    def test_an_anonymous_visitor_goes_to_the_sign_in_form(self, client, db):
        response = client.get("/admin/", follow=True)
        assert response.redirect_chain[-1][0] == f"{LOGIN}?next=/admin/"

    def test_an_admin_gets_in(self, as_user):
        assert as_user("admin").get("/admin/").status_code == 200


# --- Cache-Control on every signed-in page ------------------------------------------------


def directives(response) -> set[str]:
    return {part.strip() for part in response.get("Cache-Control", "").split(",") if part}


class TestSignedInPagesAreNotStored:
    @pytest.mark.parametrize(
        "path",
        [
            "/",
            "/dashboard/",
            "/dashboard/evaluations/",
            "/dashboard/admin/",
            "/accounts/sessions/",
            LOGOUT,
            LOGIN,
            "/no-such-page/",
        ],
    )
    def test_private_no_store(self, as_user, backend, path):
        response = as_user("admin").get(path)
        assert response.status_code in (200, 404)
        assert {"private", "no-store"} <= directives(response), response.get("Cache-Control")

    def test_the_403_page_too(self, as_user):
        response = as_user("evaluator").get("/dashboard/admin/")
        assert response.status_code == 403
        assert {"private", "no-store"} <= directives(response)

    def test_anonymous_pages_may_be_cached(self, client, db):
        assert "no-store" not in directives(client.get("/"))


class TestSignOutWithoutDatabaseInDetail:
    """What an operator and the backend see of a sign-out while the database is down."""

    @pytest.fixture
    def database_down(self, monkeypatch):
        def refuse(self):
            raise OperationalError("connection refused")

        return lambda: monkeypatch.setattr(configured_store(), "load", refuse)

    @pytest.fixture
    def sign_outs(self, monkeypatch):
        from accounts.ops import metrics

        counted = []
        monkeypatch.setattr(metrics, "sign_out", lambda reason, n=1: counted.append((reason, n)))
        return counted

    def test_the_log_says_the_database_and_the_backend_did_not_answer(
        self, as_user, backend, database_down, sign_outs, caplog
    ):
        client = as_user("admin")
        backend.post(f"{fakes.BASE}/auth/logout", body=fakes.connection_refused())
        database_down()
        caplog.clear()
        client.post(LOGOUT)
        errors = [r.getMessage() for r in caplog.records if r.name == "accounts.views"]
        assert errors == [
            "Sign-out without the database (connection refused): ending the browser's side",
            "Sign-out without the database: the backend was not told: "
            "POST /auth/logout: ConnectionError",
        ]
        assert sign_outs == [("revocation_lost", 1)]

    def test_a_revoked_pair_counts_as_a_sign_out_by_the_user(
        self, as_user, backend, database_down, sign_outs
    ):
        client = as_user("admin")
        fakes.stub_logout(backend)
        database_down()
        client.post(LOGOUT)
        assert sign_outs == [("user", 1)]

    def test_a_browser_holding_only_its_refresh_cookie_has_it_revoked(
        self, as_user, backend, database_down
    ):
        client = as_user("admin")
        del client.cookies["access_token"]
        logout = fakes.stub_logout(backend)
        database_down()
        response = client.post(LOGOUT)
        assert response.status_code == 302
        assert "refresh_token=refresh-1" in logout.calls[0].request.headers["Cookie"]

    @pytest.mark.parametrize(
        ("backend_answers", "revocation", "reason"),
        [(True, "done", Reason.USER), (False, "lost", Reason.REVOCATION_LOST)],
    )
    def test_a_script_is_told_whether_the_backend_was(
        self, as_user, backend, database_down, backend_answers, revocation, reason
    ):
        client = as_user("admin")
        if backend_answers:
            fakes.stub_logout(backend)
        else:
            backend.post(f"{fakes.BASE}/auth/logout", body=fakes.connection_refused())
        database_down()
        response = client.post(LOGOUT, HTTP_ACCEPT="application/json")
        assert response.status_code == 200
        assert response.json() == {
            "ok": True,
            "revocation": revocation,
            "message": str(reason.message),
        }

    def test_a_site_without_the_messages_middleware_still_signs_out(
        self, as_user, backend, database_down, settings
    ):
        settings.MIDDLEWARE = [
            name for name in settings.MIDDLEWARE if not name.endswith(".MessageMiddleware")
        ]
        client = as_user("admin")
        fakes.stub_logout(backend)
        database_down()
        response = client.post(LOGOUT)
        assert response.status_code == 302
        assert response.cookies["access_token"].value == ""


class TestEndSession:
    """accounts/signout.py `end_session`, called directly: the one place a session ends."""

    @pytest.fixture
    def ended(self, db, monkeypatch):
        from django.contrib.messages import get_messages
        from django.contrib.messages.storage.fallback import FallbackStorage
        from django.test import RequestFactory

        from accounts.client import Tokens
        from accounts.ops import metrics
        from accounts.signout import end_session
        from accounts.state import TokenState

        counted = []
        monkeypatch.setattr(metrics, "sign_out", lambda reason, n=1: counted.append(reason))

        def end(reason: str, *, user=None, with_messages: bool = True):
            request = RequestFactory().get("/dashboard/")
            request.session = session_store.SessionStore()
            request.session["kept"] = "until now"
            request.session.save()
            if user is not None:
                request.user = user
            if with_messages:
                request._messages = FallbackStorage(request)
            TokenState.of(request).tokens = Tokens(access="a", refresh="r")
            end_session(request, Reason(reason))
            request.said = [str(m) for m in get_messages(request)] if with_messages else None
            request.counted = counted
            return request

        return end

    def test_a_suspicious_end_is_a_warning_naming_the_backend_user(self, ended, caplog):
        user = fakes.make_user("admin")
        request = ended("foreign_cookies", user=user)
        (record,) = [r for r in caplog.records if r.name == "accounts.signout"]
        assert (record.levelname, record.getMessage()) == (
            "WARNING",
            f"Session of backend user {user.backend_id} ended: foreign_cookies",
        )
        assert request.said == ["Your session has ended; please sign in again."]
        assert request.counted == ["foreign_cookies"]

    def test_a_sign_out_of_ones_own_is_information(self, ended, caplog):
        user = fakes.make_user("admin")
        with caplog.at_level("INFO", logger="accounts.signout"):
            request = ended("user", user=user)
        (record,) = [r for r in caplog.records if r.name == "accounts.signout"]
        assert (record.levelname, record.getMessage()) == (
            "INFO",
            f"Session of backend user {user.backend_id} ended: user",
        )
        assert request.said == ["You have been signed out."]

    def test_the_session_is_flushed_and_the_tokens_dropped(self, ended):
        from accounts.client import Tokens
        from accounts.state import TokenState

        user = fakes.make_user("admin")
        request = ended("refused", user=user)
        assert dict(request.session.items()) == {}
        assert not request.user.is_authenticated
        assert TokenState.of(request).tokens == Tokens()

    def test_a_request_without_a_user_or_messages_still_ends(self, ended, caplog):
        request = ended("no_tokens", with_messages=False)
        assert dict(request.session.items()) == {}
        assert "Session of backend user None ended: no_tokens" in caplog.messages

    def test_a_reason_without_words_of_its_own_says_nothing(self, ended):
        # A session ended for someone not at this browser, ended in a request anyway.
        assert ended("ended_elsewhere").said == []


class TestSignInAndOutWording:
    """The exact words a person reads when sign-in is throttled or sign-out cannot reach
    the backend, and what the log and the queue keep of it."""

    def test_the_throttled_page_says_what_and_how_long_in_full(self, client, db, backend):
        fakes.stub_login(backend, status=429, headers=[("Retry-After", "37")])
        body = client.post(LOGIN, ADMIN_FORM).content.decode()
        alert = re.search(r'<div class="alert" role="alert">\s*(.*?)\s*</div>', body, re.S)[1]
        assert re.split(r"\s*\n\s*", alert) == [
            "<h2>Too many sign-in attempts</h2>",
            "<p>Please wait 37 seconds before you try again.</p>",
        ]

    def test_a_sign_out_the_backend_missed_is_logged_and_queued_with_its_error(
        self, as_user, backend, caplog
    ):
        from accounts.models import PendingRevocation

        client = as_user("admin")
        backend.post(f"{fakes.BASE}/auth/logout", body=fakes.connection_refused())
        client.post(LOGOUT)
        assert (
            "Could not revoke the tokens at the backend: "
            "POST /auth/logout: ConnectionError"
        ) in caplog.messages
        row = PendingRevocation.objects.get()
        assert row.last_error == "BackendUnavailable: POST /auth/logout: ConnectionError"

    def test_a_browser_holding_only_its_refresh_cookie_has_it_revoked(self, as_user, backend):
        client = as_user("admin")
        del client.cookies["access_token"]
        logout = fakes.stub_logout(backend)
        assert client.post(LOGOUT).status_code == 302
        assert "refresh_token=refresh-1" in logout.calls[0].request.headers["Cookie"]


class TestCsrfFailureWayBack:
    def back_of(self, body: str) -> dict:
        back = re.search(r'<a class="button" href="([^"]+)" id="csrf-back">', body)[1]
        location = urlsplit(back.replace("&amp;", "&"))
        assert location.path == LOGIN
        return parse_qs(location.query)

    def test_a_next_in_the_forms_address_is_carried(self, db):
        client = Client(enforce_csrf_checks=True)
        body = client.post(f"{LOGIN}?next=/dashboard/evaluations/", ADMIN_FORM).content.decode()
        assert self.back_of(body) == {"next": ["/dashboard/evaluations/"]}

    def test_a_stale_form_elsewhere_leads_back_to_its_page(self, db):
        client = Client(enforce_csrf_checks=True)
        body = client.post("/accounts/sessions/?page=2", {}).content.decode()
        assert self.back_of(body) == {"next": ["/accounts/sessions/?page=2"]}

    def test_a_signed_in_person_is_sent_back_to_the_dashboard_by_name(self, as_user):
        client = as_user("admin")
        client.handler.enforce_csrf_checks = True
        response = client.post("/accounts/sessions/", {})
        body = response.content.decode()
        assert response.status_code == 403
        assert '<a class="button" href="/dashboard/">Go back</a>' in body
        assert 'id="csrf-back"' not in body
        assert fakes.PROFILES["admin"]["firstName"] in body  # the header, as on every page


class TestWaitAndOutcomes:
    def test_the_wait_is_rounded_to_the_nearest_minute_and_ends_when_said(self, monkeypatch):
        from datetime import UTC, datetime

        from accounts import views

        now = datetime(2026, 12, 6, 14, 0, 10, tzinfo=UTC)
        monkeypatch.setattr(views.timezone, "now", lambda: now)
        assert wait_phrase(90) == "about 2 minutes (until 14:01 UTC)"
        assert wait_phrase(89) == "about 1 minute (until 14:01 UTC)"
        assert wait_phrase(3000) == "about 50 minutes (until 14:50 UTC)"

    @pytest.fixture
    def sign_ins(self, monkeypatch):
        from accounts.ops import metrics

        counted = []
        monkeypatch.setattr(metrics, "sign_in", counted.append)
        return counted

    def test_a_wrong_password_is_counted_as_one(self, client, db, backend, sign_ins):
        backend.post(f"{fakes.BASE}/auth/login", status=401, json={"message": "Unauthorized"})
        client.post(LOGIN, ADMIN_FORM)
        assert sign_ins == ["wrong_password"]

    def test_an_account_without_access_is_counted_as_one(self, client, db, backend, sign_ins):
        fakes.stub_login(backend)
        fakes.stub_me(backend, "viewer")
        fakes.stub_logout(backend)
        client.post(LOGIN, ADMIN_FORM)
        assert sign_ins == ["no_allowed_role"]

    def test_a_malformed_form_is_not_counted(self, client, db, sign_ins):
        client.post(LOGIN, {"email": "not an email", "password": ""})
        assert sign_ins == []


class TestSignInOutcomesCounted:
    """Each sign-in is counted once, under the outcome a person met (accounts/ops/metrics.py)."""

    @pytest.fixture
    def counted(self, monkeypatch):
        from accounts.ops import metrics

        seen = {"sign_in": [], "throttle": []}
        monkeypatch.setattr(metrics, "sign_in", seen["sign_in"].append)
        monkeypatch.setattr(metrics, "throttle", seen["throttle"].append)
        return seen

    def raising(self, monkeypatch, error):
        from accounts.backends import AuthApiBackend

        def authenticate(self, request, email=None, password=None, **kwargs):
            raise error

        monkeypatch.setattr(AuthApiBackend, "authenticate", authenticate)

    def test_a_sign_in_that_works(self, client, db, backend, counted):
        fakes.stub_login(backend)
        fakes.stub_me(backend, "admin")
        assert client.post(LOGIN, ADMIN_FORM).status_code == 302
        assert counted == {"sign_in": ["ok"], "throttle": ["allowed"]}

    def test_refused_by_this_sites_throttle(self, client, db, counted, monkeypatch):
        from accounts import throttle

        monkeypatch.setattr(throttle.SignInAttempt, "start", lambda self: 30)
        assert client.post(LOGIN, ADMIN_FORM).status_code == 429
        assert counted == {"sign_in": ["throttled"], "throttle": ["refused"]}

    def test_refused_by_the_backends_throttle(self, client, db, backend, counted):
        fakes.stub_login(backend, status=429, headers=[("Retry-After", "37")])
        assert client.post(LOGIN, ADMIN_FORM).status_code == 429
        assert counted == {"sign_in": ["throttled"], "throttle": ["allowed"]}

    def test_a_token_too_large_for_the_browser(self, client, db, counted, monkeypatch):
        from accounts.exceptions import CookieTooLarge

        self.raising(monkeypatch, CookieTooLarge("access_token", 5000))
        assert client.post(LOGIN, ADMIN_FORM).status_code == 502
        assert counted["sign_in"] == ["token_too_large"]

    def test_an_answer_that_does_not_fit(self, client, db, counted, monkeypatch):
        from accounts.exceptions import BackendProtocolError

        self.raising(monkeypatch, BackendProtocolError("POST /auth/login answered 422"))
        assert client.post(LOGIN, ADMIN_FORM).status_code == 502
        assert counted["sign_in"] == ["backend_unusable"]

    def test_a_backend_that_does_not_answer(self, client, db, backend, counted):
        backend.post(f"{fakes.BASE}/auth/login", body=fakes.connection_refused())
        assert client.post(LOGIN, ADMIN_FORM).status_code == 503
        assert counted["sign_in"] == ["backend_down"]


def test_a_signed_in_visitor_is_not_told_their_session_ended(as_user):
    client = as_user("admin")
    body = client.get(f"{LOGIN}?next=/dashboard/evaluations/").content.decode()
    assert reason_on(body) is None
    assert 'id="signed-in-already"' in body


def test_a_wrong_password_needs_no_reason_beside_its_error(client, db, backend):
    backend.post(f"{fakes.BASE}/auth/login", status=401, json={"message": "Unauthorized"})
    body = client.post(f"{LOGIN}?next=/dashboard/evaluations/", ADMIN_FORM).content.decode()
    assert reason_on(body) is None


class TestServiceErrorPage:
    def alert(self, body: str) -> list[str]:
        alert = re.search(r'<div class="alert" role="alert">\s*(.*?)\s*</div>', body, re.S)[1]
        return re.split(r"\s*\n\s*", alert)

    def test_a_token_too_large_says_sign_in_could_not_be_completed(self, client, db, monkeypatch):
        from accounts.backends import AuthApiBackend
        from accounts.exceptions import CookieTooLarge

        def too_large(self, request, email=None, password=None, **kwargs):
            raise CookieTooLarge("access_token", 5000)

        monkeypatch.setattr(AuthApiBackend, "authenticate", too_large)
        assert self.alert(client.post(LOGIN, ADMIN_FORM).content.decode()) == [
            "<h2>Sign-in could not be completed</h2>",
            "<p>The sign-in service issued a token too large for your browser to keep. "
            "Nothing was changed; please tell the site&#x27;s administrator.</p>",
        ]

    def logged(self, caplog) -> list[tuple[str, str]]:
        return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "accounts.views"]

    def test_an_answer_that_does_not_fit_says_so_and_the_log_says_what(
        self, client, db, monkeypatch, caplog
    ):
        from accounts.backends import AuthApiBackend
        from accounts.exceptions import BackendProtocolError

        def unusable(self, request, email=None, password=None, **kwargs):
            raise BackendProtocolError("POST /auth/login answered 422")

        monkeypatch.setattr(AuthApiBackend, "authenticate", unusable)
        assert self.alert(client.post(LOGIN, ADMIN_FORM).content.decode()) == [
            "<h2>Sign-in could not be completed</h2>",
            "<p>The sign-in service answered in a way this site could not use. Nothing "
            "was changed; please try again later or tell the site&#x27;s administrator.</p>",
        ]
        assert self.logged(caplog) == [
            (
                "ERROR",
                "Sign-in failed: the backend's answer did not fit the settings: "
                "POST /auth/login answered 422",
            )
        ]

    def test_a_backend_that_does_not_answer_says_so_and_warns_naming_the_call(
        self, client, db, backend, caplog
    ):
        backend.post(f"{fakes.BASE}/auth/login", body=fakes.connection_refused())
        response = client.post(LOGIN, ADMIN_FORM)
        assert (response.status_code, response["Retry-After"]) == (503, "5")
        assert self.alert(response.content.decode()) == [
            "<h2>Sign-in service unavailable</h2>",
            "<p>We could not reach the sign-in service. Please try again in a moment.</p>",
        ]
        assert self.logged(caplog) == [
            ("WARNING", "Sign-in service unavailable: POST /auth/login: ConnectionError")
        ]

    @pytest.fixture
    def throttled(self, monkeypatch):
        from accounts import throttle

        monkeypatch.setattr(throttle.SignInAttempt, "start", lambda self: 30)

    def email_input(self, body: str) -> str:
        return re.search(r'<input type="email"[^>]*>', body)[0]

    def test_the_form_keeps_the_email_cut_to_what_its_field_takes(self, client, db, throttled):
        email = "a" * 300 + "@example.com"
        body = client.post(LOGIN, {"email": email, "password": "x"}).content.decode()
        assert f'value="{email[:254]}"' in self.email_input(body)

    def test_a_post_without_an_email_shows_an_empty_field(self, client, db, throttled):
        body = client.post(LOGIN, {"password": "x"}).content.decode()
        assert "value=" not in self.email_input(body)
