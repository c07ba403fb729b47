"""Back-channel sign-out: the backend ends a user's sessions in the app, server to server.

In process: `POST /accounts/backchannel-logout/` (accounts/usersessions/backchannel.py)
refuses every bad token or request with a 4xx that says why and never echoes
the token, and ends the named user's sessions (or one sign-in's); the
reference API's sender (authapi/backchannel.py) and `manage.py apiuser
disable|revoke` deliver the token after the commit and report the answer.
Over real HTTP, in both token storage modes: disabling an account at the
API signs its browsers out of the app at once.
"""

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from io import StringIO
from urllib.parse import urlencode, urlsplit

import jwt
import pytest
import requests
import responses
from django.contrib.auth import SESSION_KEY
from django.core.management import call_command
from django.db import DatabaseError
from django.test import Client

from accounts.models import User
from accounts.usersessions import backchannel
from authapi.backchannel import Delivery, logout_token, send_logout
from authapi.demo import DEMO_USERS
from authapi.models import ApiUser
from tests import fakes
from tests.flows import sign_in_as
from tests.servers import reserve_port, running_app, running_authapi
from tests.test_storage_integration import sealed_pair

SECRET = "back-channel-test-secret-of-32-bytes-or-more"
URL = "/accounts/backchannel-logout/"
APP_URL = "http://app.test/accounts/backchannel-logout/"
FORM = "application/x-www-form-urlencoded"
DROP = object()  # a claim left out of the token
ADMIN, EVALUATOR = DEMO_USERS[0], DEMO_USERS[1]


def make_token(*, key: str = SECRET, algorithm: str = "HS256", **claims) -> str:
    """Return a logout token for backend user "1" (the admin), with `claims` changed."""
    values = {"sub": "1", "iat": int(time.time()), "jti": secrets.token_urlsafe(12)}
    values.update(claims)
    return jwt.encode(
        {name: value for name, value in values.items() if value is not DROP},
        key,
        algorithm=algorithm,
    )


def forged(header: dict, *, signature: bytes = b"", **claims) -> str:
    """Return a token with a header of our choosing and the given signature (none: empty)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    payload = {"sub": "1", "iat": int(time.time()), "jti": secrets.token_urlsafe(12), **claims}
    signing_input = f"{part(json.dumps(header).encode())}.{part(json.dumps(payload).encode())}"
    return f"{signing_input}.{part(signature)}"


def hmac_signed(header: dict, digest=hashlib.sha256) -> str:
    """A token under `header`, signed by HMAC with the shared secret (HS512, key confusion)."""
    unsigned = forged(header).rsplit(".", 1)[0]
    signature = hmac.new(SECRET.encode(), unsigned.encode(), digest).digest()
    return f"{unsigned}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def post(client: Client, token: str, **extra):
    """POST `token` form-encoded, the way OIDC Back-Channel Logout sends it."""
    return client.post(URL, urlencode({"logout_token": token}), content_type=FORM, **extra)


def session_of(user: User, *, sid: str = "") -> str:
    """Create a session signed in as `user` from backend sign-in `sid`; return its key."""
    return fakes.user_session(user, sid=sid)


live_keys = fakes.live_session_keys


@pytest.fixture
def enabled(settings, db):
    settings.AUTH_BACKCHANNEL_SECRET = SECRET
    settings.AUTH_BACKCHANNEL_MAX_AGE = 120


@pytest.fixture
def people(enabled):
    """The admin (backend id "1") signed in twice, the evaluator ("2") once."""
    admin, evaluator = fakes.make_user("admin"), fakes.make_user("evaluator")
    return {
        "admin_a": session_of(admin, sid="family-a"),
        "admin_b": session_of(admin, sid="7"),
        "evaluator": session_of(evaluator, sid="family-e"),
    }


class TestEndsSessions:
    def test_ends_every_session_of_the_user_and_no_one_elses(self, client, people, caplog):
        token = make_token()
        with caplog.at_level(logging.INFO, logger="accounts.usersessions.backchannel"):
            response = post(client, token)

        assert response.status_code == 200
        assert response.json() == {"ok": True, "ended": 2}
        assert live_keys() == {people["evaluator"]}
        assert "no-store" in response["Cache-Control"]
        logger = "accounts.usersessions.backchannel"
        lines = [r.getMessage() for r in caplog.records if r.name == logger]
        assert lines == ["Back-channel sign-out of backend user 1: 2 session(s) ended"]
        assert token not in caplog.text

    @pytest.mark.parametrize(("sid", "ended"), [("family-a", "admin_a"), (7, "admin_b")])
    def test_with_a_sid_only_that_sign_in_ends(self, client, people, sid, ended):
        response = post(client, make_token(sid=sid))

        assert response.json() == {"ok": True, "ended": 1}
        assert live_keys() == set(people.values()) - {people[ended]}

    def test_a_sid_of_another_user_ends_nothing(self, client, people):
        response = post(client, make_token(sid="family-e"))

        assert response.json() == {"ok": True, "ended": 0}
        assert live_keys() == set(people.values())

    def test_an_unknown_user_is_answered_with_none_ended(self, client, people):
        response = post(client, make_token(sub="999"))

        assert response.status_code == 200
        assert response.json() == {"ok": True, "ended": 0}
        assert live_keys() == set(people.values())

    def test_a_json_body_is_accepted_too(self, client, people):
        response = client.post(URL, {"logout_token": make_token()}, content_type="application/json")

        assert response.json() == {"ok": True, "ended": 2}

    def test_iat_a_little_ahead_of_this_clock_is_accepted(self, client, people):
        assert post(client, make_token(iat=int(time.time()) + 20)).status_code == 200

    def test_needs_no_csrf_token(self, csrf_client, people):
        assert post(csrf_client, make_token()).json() == {"ok": True, "ended": 2}

    def test_the_browser_is_signed_out_at_its_next_request(self, signed_in, enabled):
        browser = signed_in("admin", access=fakes.access_jwt(), refresh="refresh-1")
        assert browser.get("/dashboard/").status_code == 200

        response = post(Client(), make_token())
        page = browser.get("/dashboard/")

        assert response.json() == {"ok": True, "ended": 1}
        assert page.status_code == 302
        assert urlsplit(page["Location"]).path == "/accounts/login/"
        assert SESSION_KEY not in browser.session

    def test_a_database_failure_lets_the_backend_send_the_token_again(
        self, client, people, monkeypatch
    ):
        token = make_token()

        def broken(**kwargs):
            raise DatabaseError("the database went away")

        with monkeypatch.context() as patched:
            patched.setattr(backchannel, "end_sessions", broken)
            with pytest.raises(DatabaseError):
                post(client, token)

        assert post(client, token).json() == {"ok": True, "ended": 2}


BAD_TOKENS = {
    "bad signature": (lambda: make_token(key="another-secret-of-32-bytes-or-more!!"), "signature"),
    "alg none": (lambda: forged({"alg": "none", "typ": "JWT"}), "algorithm is not allowed"),
    "alg none, lower and upper": (lambda: forged({"alg": "None"}), "algorithm is not allowed"),
    "HS512": (
        lambda: hmac_signed({"alg": "HS512", "typ": "JWT"}, hashlib.sha512),
        "algorithm is not allowed",
    ),
    "RS256 header, HMAC signature": (
        lambda: hmac_signed({"alg": "RS256", "typ": "JWT"}),
        "algorithm is not allowed",
    ),
    "no sub": (lambda: make_token(sub=DROP), "no sub claim"),
    "no iat": (lambda: make_token(iat=DROP), "no iat claim"),
    "no jti": (lambda: make_token(jti=DROP), "no jti claim"),
    "iat too old": (lambda: make_token(iat=int(time.time()) - 121), "more than the 120 s allowed"),
    "iat in the future": (lambda: make_token(iat=int(time.time()) + 60), "not valid yet"),
    "iat a string": (lambda: make_token(iat=str(int(time.time()))), "iat must be a number"),
    "exp passed": (
        lambda: make_token(iat=int(time.time()) - 100, exp=int(time.time()) - 60),
        "expired",
    ),
    "empty sub": (lambda: make_token(sub=""), "sub must be a non-empty string"),
    "numeric sub": (lambda: make_token(sub=1), "sub must be a non-empty string"),
    "empty jti": (lambda: make_token(jti=""), "jti must be a non-empty string"),
    "numeric jti": (lambda: make_token(jti=5), "jti must be a non-empty string"),
    "empty sid": (lambda: make_token(sid=""), "sid must be"),
    "boolean sid": (lambda: make_token(sid=True), "sid must be"),
    "list sid": (lambda: make_token(sid=["family-a"]), "sid must be"),
    "overlong sid": (lambda: make_token(sid="x" * 129), "sid is longer"),
    "a nonce (an ID token)": (lambda: make_token(nonce="n-1"), "nonce"),
    "events without the logout event": (lambda: make_token(events={"other": {}}), "events"),
    "three dots": (lambda: "a.b.c.d", "not a JWT"),
    "non-ASCII": (lambda: "ëyJ.ü.ß", "not a JWT"),
    "garbage parts": (lambda: "abc.def.ghi", "malformed"),
}


class TestRefusesBadTokens:
    @pytest.mark.parametrize("case", BAD_TOKENS, ids=list(BAD_TOKENS))
    def test_refused_with_the_reason_and_nothing_ended(self, client, people, case):
        build, reason = BAD_TOKENS[case]
        token = build()

        response = post(client, token)

        assert response.status_code == 400
        body = response.json()
        assert body["error"] == "invalid_token"
        assert reason in body["message"]
        assert token not in response.content.decode()
        assert live_keys() == set(people.values())

    def test_a_token_is_accepted_once(self, client, people):
        token = make_token()
        assert post(client, token).status_code == 200

        replay = post(client, token)

        assert replay.status_code == 400
        assert replay.json()["error"] == "invalid_token"
        assert "used already" in replay.json()["message"]

    def test_a_new_token_with_a_used_jti_is_a_replay(self, client, people):
        assert post(client, make_token(jti="jti-1", sid="family-a")).status_code == 200

        replay = post(client, make_token(jti="jti-1"))

        assert replay.status_code == 400
        assert "used already" in replay.json()["message"]
        assert people["admin_b"] in live_keys()

    def test_a_refused_token_does_not_spend_its_jti(self, client, people):
        assert post(client, make_token(jti="jti-2", key="x" * 40)).status_code == 400
        assert post(client, make_token(jti="jti-2")).status_code == 200


class TestRefusesBadRequests:
    def test_get_is_405(self, client, enabled):
        response = client.get(URL)
        assert response.status_code == 405
        assert response["Allow"] == "POST"

    @pytest.mark.parametrize("secret", [None, ""])
    @pytest.mark.parametrize("method", ["get", "post"])
    def test_without_a_secret_the_endpoint_does_not_exist(
        self, client, settings, db, secret, method
    ):
        settings.AUTH_BACKCHANNEL_SECRET = secret
        response = client.get(URL) if method == "get" else post(client, make_token())
        assert response.status_code == 404

    @pytest.mark.parametrize(
        ("content_type", "body", "message"),
        [
            ("text/plain", "logout_token=x", "application/x-www-form-urlencoded"),
            ("multipart/form-data; boundary=b", "--b--", "application/x-www-form-urlencoded"),
            (FORM, "", "logout_token is missing"),
            (FORM, "token=abc", "logout_token is missing"),
            ("application/json", "{not json", "not JSON"),
            ("application/json", '["logout_token"]', "logout_token is missing"),
            ("application/json", '{"logout_token": 12}', "logout_token is missing"),
            ("application/json", "[" * 5000 + "]" * 5000, "not JSON"),
            ("application/json", b"\xff\xfe\xfa", "not JSON"),
            (FORM, "&".join(["a=1"] * 2000), "cannot be read"),
        ],
        ids=[
            "text",
            "multipart",
            "empty",
            "other field",
            "bad JSON",
            "JSON list",
            "JSON number",
            "deep JSON",
            "not UTF-8 JSON",
            "too many fields",
        ],
    )
    def test_wrong_content_is_400(self, client, enabled, content_type, body, message):
        response = client.post(URL, body, content_type=content_type)

        assert response.status_code == 400
        assert response.json()["error"] == "invalid_request"
        assert message in response.json()["message"]

    @pytest.mark.parametrize(
        "body",
        [
            "logout_token=%C3%AB%C3%BF%E2%82%AC.%F0%9F%94%91.x",  # UTF-8 non-ASCII
            b"logout_token=\xff\xfe\xe9.\x80.\x00",  # not UTF-8 at all
            "logout_token=ключ.токен.подпись".encode(),
        ],
        ids=["percent-encoded", "raw bytes", "cyrillic"],
    )
    def test_non_ascii_garbage_is_400(self, client, enabled, body):
        response = client.post(URL, body, content_type=FORM)

        assert response.status_code == 400
        assert response.json()["error"] == "invalid_token"

    def test_a_body_over_10_kb_is_413(self, client, people):
        response = post(client, make_token(padding="x" * 11_000))

        assert response.status_code == 413
        assert response.json()["error"] == "too_large"
        assert live_keys() == set(people.values())


# --- the reference API's side: authapi/backchannel.py and `apiuser` --------------------


def relay_to_the_app(request):
    """A `responses` callback that hands the API's POST to the app in this process."""
    answer = Client().post(URL, request.body, content_type=request.headers["Content-Type"])
    return answer.status_code, {"Content-Type": answer["Content-Type"]}, answer.content


class TestSender:
    def test_the_token_is_what_the_app_accepts(self, settings):
        token = logout_token(user_id="42", secret=SECRET)

        claims = jwt.decode(token, SECRET, algorithms=["HS256"])
        assert set(claims) == {"sub", "iat", "jti"}
        assert claims["sub"] == "42"
        assert abs(claims["iat"] - time.time()) < 5
        assert len(claims["jti"]) >= 16
        assert logout_token(user_id="42", secret=SECRET) != token, "a new jti each time"
        assert backchannel.verify(token, secret=SECRET, max_age=120).user_id == "42"

    @responses.activate
    def test_posts_the_token_form_encoded_with_a_timeout(self):
        responses.post(APP_URL, json={"ok": True, "ended": 2})

        delivery = send_logout(user_id="1", url=APP_URL, secret=SECRET)

        assert delivery == Delivery(True, ended=2)
        assert delivery.describe() == "Back-channel sign-out: the app ended 2 sessions"
        (call,) = responses.calls
        assert call.request.headers["Content-Type"] == FORM
        assert call.request.req_kwargs["timeout"] == 5.0
        sent = dict(pair.split("=") for pair in call.request.body.split("&"))
        assert jwt.decode(sent["logout_token"], SECRET, algorithms=["HS256"])["sub"] == "1"

    @pytest.mark.parametrize(
        ("answer", "line"),
        [
            (
                {"status": 400, "json": {"error": "invalid_token", "message": "expired"}},
                "not confirmed: the app answered 400: invalid_token: expired (http://app.test/",
            ),
            ({"status": 404, "body": "<h1>Not Found</h1>"}, "AUTH_BACKCHANNEL_SECRET"),
            ({"status": 302, "headers": {"Location": "/login"}}, "the app answered 302"),
            ({"status": 200, "body": "OK"}, "the app answered 200"),
            ({"body": requests.ConnectionError("refused")}, "could not be reached"),
            ({"body": requests.ReadTimeout("slow")}, "did not answer within 5 s"),
        ],
        ids=["refused", "404", "redirect", "not JSON", "down", "timeout"],
    )
    @responses.activate
    def test_any_other_answer_is_reported_not_raised(self, answer, line):
        responses.post(APP_URL, **answer)

        delivery = send_logout(user_id="1", url=APP_URL, secret=SECRET)

        assert delivery.confirmed is False
        assert line in delivery.describe()
        assert delivery.describe().count("\n") == 0


def apiuser(*args: str) -> str:
    out = StringIO()
    call_command("apiuser", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def api_and_app(enabled, settings):
    """The API's accounts and the app's mirror of the admin in one database, wired together."""
    call_command("seed_demo_users", quiet=True)
    settings.AUTHAPI_BACKCHANNEL_URL = APP_URL
    settings.AUTHAPI_BACKCHANNEL_SECRET = SECRET
    api_admin = ApiUser.objects.get(email=ADMIN.email)
    admin = User.objects.create(username="api-admin", backend_id=str(api_admin.pk))
    return [session_of(admin, sid="f1"), session_of(admin, sid="f2")]


class TestApiuserCommand:
    @pytest.mark.parametrize(
        ("action", "first_line"), [("disable", "Disabled "), ("revoke", "Revoked 0 ")]
    )
    @responses.activate
    def test_tells_the_app_after_the_commit_and_prints_its_answer(
        self, api_and_app, django_capture_on_commit_callbacks, action, first_line
    ):
        responses.add_callback(responses.POST, APP_URL, callback=relay_to_the_app)
        out = StringIO()

        with django_capture_on_commit_callbacks(execute=False) as pending:
            call_command("apiuser", action, ADMIN.email, stdout=out)
        assert len(responses.calls) == 0, "nothing is sent before the commit"
        assert len(live_keys()) == 2
        for callback in pending:
            callback()

        first, second = out.getvalue().splitlines()
        assert first.startswith(first_line)
        assert second == "Back-channel sign-out: the app ended 2 sessions"
        assert len(responses.calls) == 1
        assert live_keys() == set()

    @responses.activate
    def test_prints_the_apps_confirmation(self, api_and_app, django_capture_on_commit_callbacks):
        responses.add_callback(responses.POST, APP_URL, callback=relay_to_the_app)
        out = StringIO()

        with django_capture_on_commit_callbacks(execute=True):
            call_command("apiuser", "disable", ADMIN.email, stdout=out)

        assert out.getvalue().splitlines() == [
            f"Disabled {ADMIN.email}: its tokens are refused until it is enabled again",
            "Back-channel sign-out: the app ended 2 sessions",
        ]

    @responses.activate
    def test_an_app_that_cannot_be_reached_does_not_fail_the_disable(
        self, api_and_app, django_capture_on_commit_callbacks
    ):
        responses.post(APP_URL, body=requests.ConnectionError("refused"))
        out = StringIO()

        with django_capture_on_commit_callbacks(execute=True):
            call_command("apiuser", "disable", ADMIN.email, stdout=out)

        assert ApiUser.objects.get(email=ADMIN.email).is_active is False
        assert (
            out.getvalue()
            .splitlines()[1]
            .startswith("Back-channel sign-out not confirmed: the app could not be reached")
        )

    @responses.activate
    def test_a_missing_secret_is_reported_and_the_disable_stands(
        self, api_and_app, settings, django_capture_on_commit_callbacks
    ):
        settings.AUTHAPI_BACKCHANNEL_SECRET = ""
        out = StringIO()

        with django_capture_on_commit_callbacks(execute=True):
            call_command("apiuser", "disable", ADMIN.email, stdout=out)

        assert ApiUser.objects.get(email=ADMIN.email).is_active is False
        assert "AUTHAPI_BACKCHANNEL_SECRET" in out.getvalue().splitlines()[1]
        assert len(responses.calls) == 0

    @pytest.mark.parametrize(
        "args", [("enable", ADMIN.email), ("roles", ADMIN.email, "admin")], ids=["enable", "roles"]
    )
    @responses.activate
    def test_other_changes_tell_the_app_nothing(
        self, api_and_app, django_capture_on_commit_callbacks, args
    ):
        with django_capture_on_commit_callbacks(execute=True) as pending:
            out = apiuser(*args)

        assert pending == []
        assert out.count("\n") == 1

    @responses.activate
    def test_without_a_url_the_app_is_not_told(
        self, api_and_app, settings, django_capture_on_commit_callbacks
    ):
        settings.AUTHAPI_BACKCHANNEL_URL = None

        with django_capture_on_commit_callbacks(execute=True) as pending:
            out = apiuser("disable", ADMIN.email)

        assert pending == []
        assert out.count("\n") == 1
        assert len(live_keys()) == 2


# --- over real HTTP, both token storage modes -------------------------------------------


@pytest.fixture(scope="module")
def servers(tmp_path_factory, storage_mode):
    """The app under gunicorn and the reference API, each knowing the other's URL.

    The app starts first, pointed at a port chosen here; the API then binds it.
    """
    from django.conf import settings

    if not hasattr(settings, "AUTHAPI_BACKCHANNEL_URL"):
        pytest.fail(
            "config/settings/base.py does not read AUTHAPI_BACKCHANNEL_URL and "
            "AUTHAPI_BACKCHANNEL_SECRET from the environment: the API server cannot be told "
            "the app's URL"
        )
    workdir = tmp_path_factory.mktemp(f"backchannel-{storage_mode}")
    port = reserve_port()
    (workdir / "api").mkdir()
    with (
        running_app(
            workdir,
            api_url=f"http://127.0.0.1:{port}",
            workers=2,
            AUTH_TOKEN_STORAGE=storage_mode,
            AUTH_BACKCHANNEL_SECRET=SECRET,
        ) as app,
        running_authapi(
            workdir / "api",
            port=port,
            AUTHAPI_ACCESS_TTL="600",
            AUTHAPI_BACKCHANNEL_URL=f"{app.url}{URL}",
            AUTHAPI_BACKCHANNEL_SECRET=SECRET,
        ) as api,
    ):
        yield app, api, workdir / "app.sqlite3"


def test_disabling_an_account_signs_its_browsers_out_of_the_app_at_once(servers, storage_mode):
    app, api, database = servers
    browsers = [sign_in_as(app.url, ADMIN, storage=storage_mode) for _ in range(2)]
    other = sign_in_as(app.url, EVALUATOR, storage=storage_mode)
    refresh_tokens = [sealed_pair(database, browser).refresh for browser in browsers]
    if storage_mode == "cookies":
        assert refresh_tokens == [b.cookies.get("refresh_token") for b in browsers]
    for browser in browsers:
        assert browser.get(f"{app.url}/dashboard/", timeout=10).status_code == 200
    started = time.monotonic()

    try:
        out = api.apiuser("disable", ADMIN.email)

        assert "Back-channel sign-out: the app ended 2 sessions" in out
        for browser in browsers:
            page = browser.get(f"{app.url}/dashboard/", timeout=10, allow_redirects=False)
            assert page.status_code == 302
            assert urlsplit(page.headers["Location"]).path == "/accounts/login/"
        assert time.monotonic() - started < 60, "long before the 600 s access token expires"
        assert other.get(f"{app.url}/dashboard/", timeout=10).status_code == 200
        for refresh_token in refresh_tokens:
            refused = requests.post(
                f"{api.url}/auth/refresh", cookies={"refresh_token": refresh_token}, timeout=10
            )
            assert refused.status_code == 401
        assert "Back-channel sign-out of backend user" in app.log()
        assert all(token not in app.log() for token in refresh_tokens)
    finally:
        api.apiuser("enable", ADMIN.email)
