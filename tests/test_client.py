"""The backend client: outgoing requests, timeouts and the mapping of failures."""

import io
import json

import pytest
import requests
import responses
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, ProtocolError

from accounts.client import (
    AccessTokenRejected,
    AuthApiClient,
    RefreshRefused,
    Tokens,
    get_client,
    usable_token,
)
from accounts.cookies import BackendCookie
from accounts.exceptions import (
    BackendProtocolError,
    BackendUnavailable,
    InvalidCredentials,
    Throttled,
    TokensRefused,
)
from accounts.reasons import Reason
from tests import fakes
from tests.servers import reserve_port


@pytest.fixture
def client():
    return AuthApiClient()


class TenantClient(AuthApiClient):
    def extra_headers(self):
        return {"X-Tenant": "acme", "Accept": "application/vnd.acme+json"}


@pytest.mark.parametrize(
    ("value", "usable"),
    [
        ("eyJ.abc-_~!#$%&'()*+/:<=>?@[]^`{|}", True),
        ("x" * 8192, True),
        ("x" * 8193, False),
        (None, False),
        ("", False),
        ("a b", False),
        ("a,b", False),
        ('a"b', False),
        ("a;b", False),
        ("a\\b", False),
        ("é€", False),
        ("a\x7f", False),
    ],
)
def test_usable_token_accepts_only_cookie_octets(value, usable):
    assert usable_token(value) == (value if usable else None)


class TestTokens:
    def test_repr_hides_values(self):
        assert repr(Tokens(access="abc")) == "Tokens(access=<hidden>, refresh=None)"
        assert repr(Tokens(refresh="abc")) == "Tokens(access=None, refresh=<hidden>)"

    def test_updated_by_sets_deletes_and_ignores(self):
        tokens = Tokens(access="a1", refresh="r1").updated_by(
            [
                BackendCookie(name="access_token", value="a2"),
                BackendCookie(name="other", value="x"),
            ]
        )
        assert tokens == Tokens(access="a2", refresh="r1")
        cleared = tokens.updated_by([BackendCookie(name="refresh_token", value="gone", max_age=0)])
        assert cleared == Tokens(access="a2", refresh=None)
        unusable = tokens.updated_by([BackendCookie(name="refresh_token", value="a b")])
        assert unusable.refresh is None


class TestLogin:
    def test_posts_json_and_returns_every_cookie(self, backend, client):
        stub = fakes.stub_login(backend)
        cookies = client.login("admin@example.com", "pw", client_ip="203.0.113.5")

        assert [c.name for c in cookies] == ["access_token", "refresh_token"]
        sent = stub.calls[0].request
        assert json.loads(sent.body) == {"email": "admin@example.com", "password": "pw"}
        assert sent.headers["X-Forwarded-For"] == "203.0.113.5"
        assert sent.headers["Accept"] == "application/json"
        assert "Cookie" not in sent.headers

    @pytest.mark.parametrize("status", [400, 401, 403])
    def test_refusals_are_invalid_credentials(self, backend, client, status):
        fakes.stub_login(backend, status=status, json={"message": "nope"})
        with pytest.raises(InvalidCredentials, match=f"^POST /auth/login answered {status}$"):
            client.login("a@example.com", "pw")

    @pytest.mark.parametrize(
        ("header", "seconds"), [("42", 42), ("0", 1), ("-5", 1), ("soon", 60), (None, 60)]
    )
    def test_429_carries_a_usable_retry_after(self, backend, client, header, seconds):
        fakes.stub_login(backend, status=429, headers=[("Retry-After", header)] if header else [])
        with pytest.raises(Throttled, match="^POST /auth/login answered 429$") as info:
            client.login("a@example.com", "pw")
        assert info.value.retry_after == seconds

    @pytest.mark.parametrize("status", [500, 502, 503, 504])
    def test_5xx_is_unavailable(self, backend, client, status):
        fakes.stub_login(backend, status=status)
        with pytest.raises(BackendUnavailable, match=f"^POST /auth/login answered {status}$"):
            client.login("a@example.com", "pw")

    def test_success_without_the_access_cookie_is_a_protocol_error(self, backend, client):
        fakes.stub_login(backend, headers=[("Set-Cookie", "unrelated=1; Path=/")])
        with pytest.raises(BackendProtocolError) as info:
            client.login("a@example.com", "pw")
        assert str(info.value) == (
            "POST /auth/login answered 201 with no usable access token at cookie:access_token; "
            "it held cookies unrelated and 0 bytes, not JSON; check AUTH_ACCESS_TOKEN_FROM"
        )

    def test_redirect_is_a_protocol_error_and_not_followed(self, backend, client):
        fakes.stub_login(backend, status=302, headers=[("Location", "http://evil.example/")])
        with pytest.raises(BackendProtocolError, match="^POST /auth/login answered 302$"):
            client.login("a@example.com", "pw")
        assert len(backend.calls) == 1

    def test_every_call_has_a_timeout(self, backend, settings, monkeypatch, client):
        settings.AUTH_BACKEND_CONNECT_TIMEOUT = 1.5
        settings.AUTH_BACKEND_TIMEOUT = 4.0
        seen = fakes.spy_on(monkeypatch, client.session)
        fakes.stub_login(backend)
        client.login("a@example.com", "pw")
        assert seen[0]["timeout"] == (1.5, 4.0)
        assert seen[0]["allow_redirects"] is False

    def test_the_shared_session_keeps_no_cookies_and_ignores_the_environment(self, backend):
        fakes.stub_login(backend)
        fakes.stub_me(backend)
        shared = get_client()
        shared.login("admin@example.com", "pw")
        assert len(shared.session.cookies) == 0
        shared.me(Tokens())
        assert "Cookie" not in backend.calls[-1].request.headers
        assert AuthApiClient().session.trust_env is False

    def test_the_session_sends_its_defaults_and_keeps_no_cookies_or_redirects(self, backend):
        """The lean `request()` still merges the session's default headers."""
        session = AuthApiClient().session
        backend.get(f"{fakes.BASE}/x", headers=[("Set-Cookie", "kept=no; Path=/")])
        url = f"{fakes.BASE}/x"

        response = session.request("GET", url, headers={"Accept": "application/json"}, timeout=1)

        sent = backend.calls[0].request
        assert response.status_code == 200 and sent.url == url
        assert sent.headers["Accept"] == "application/json"
        assert sent.headers["User-Agent"].startswith("python-requests/")
        assert len(session.cookies) == 0
        with pytest.raises(ValueError, match="never follow redirects"):
            session.request("GET", url, timeout=1, allow_redirects=True)
        assert len(backend.calls) == 1

    def test_the_pool_size_is_a_setting(self, settings):
        settings.AUTH_BACKEND_POOL_SIZE = 7
        session = AuthApiClient().session
        for prefix in ("http://", "https://"):
            assert session.adapters[prefix]._pool_maxsize == 7


class TestFailureMapping:
    """What each failure means for a refresh: could the backend have spent the token?"""

    @pytest.mark.parametrize(
        ("failure", "kind", "maybe_processed"),
        [
            (fakes.connection_refused(), BackendUnavailable, False),
            (requests.ConnectTimeout(), BackendUnavailable, False),
            (
                requests.ConnectionError(MaxRetryError(None, "/", ConnectTimeoutError())),
                BackendUnavailable,
                False,
            ),
            (requests.ReadTimeout(), BackendUnavailable, True),
            (requests.ConnectionError(ProtocolError("aborted")), BackendUnavailable, True),
            (requests.ConnectionError(), BackendUnavailable, True),
            (requests.exceptions.ChunkedEncodingError(), BackendProtocolError, True),
        ],
        ids=[
            "refused",
            "connect-timeout",
            "connect-timeout-wrapped",
            "read-timeout",
            "dropped",
            "bare",
            "chunked",
        ],
    )
    def test_transport_failures(self, backend, client, failure, kind, maybe_processed):
        backend.post(f"{fakes.BASE}/auth/refresh", body=failure)
        with pytest.raises(kind) as info:
            client.refresh("refresh-1")
        assert type(info.value) is kind
        assert info.value.maybe_processed is maybe_processed
        assert str(info.value) == f"POST /auth/refresh: {type(failure).__name__}"
        assert info.value.__cause__ is failure

    @pytest.mark.parametrize(
        ("status", "maybe_processed"), [(500, False), (502, False), (503, False), (504, True)]
    )
    def test_5xx(self, backend, client, status, maybe_processed):
        fakes.stub_refresh(backend, status=status)
        expected = f"^POST /auth/refresh answered {status}$"
        with pytest.raises(BackendUnavailable, match=expected) as info:
            client.refresh("refresh-1")
        assert info.value.maybe_processed is maybe_processed

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"json": {"ok": True}},
            {"headers": [("Set-Cookie", fakes.express_cookie("refresh_token", "r2", 60))]},
            {"status": 302, "headers": [("Location", "/elsewhere")]},
            {"status": 204},
        ],
        ids=["no-cookies", "refresh-only", "redirect", "no-content"],
    )
    def test_an_unusable_answer_at_refresh_may_have_spent_the_token(self, backend, client, kwargs):
        backend.post(f"{fakes.BASE}/auth/refresh", **{"status": 200, **kwargs})
        with pytest.raises(BackendProtocolError) as info:
            client.refresh("refresh-1")
        assert info.value.maybe_processed is True

    @pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
    def test_an_oversized_refresh_answer_may_have_spent_the_token(
        self, backend, client, settings, declared
    ):
        settings.AUTH_BACKEND_MAX_RESPONSE_BYTES = 100
        headers = fakes.token_headers(fakes.access_jwt(), "refresh-2")
        if declared:
            headers.append(("Content-Length", "1000"))
        backend.post(f"{fakes.BASE}/auth/refresh", body=b"x" * 1000, headers=headers)
        with pytest.raises(BackendProtocolError) as info:
            client.refresh("refresh-1")
        assert info.value.maybe_processed is True

    def test_a_real_refused_connection_counts_as_never_sent(self, settings, client):
        """No stub: a closed local port, so the shape `fakes.connection_refused` copies is real."""
        settings.API_BASEURL = f"http://127.0.0.1:{reserve_port()}"
        with pytest.raises(BackendUnavailable) as info:
            client.refresh("refresh-1")
        assert info.value.maybe_processed is False


class TestRefresh:
    def test_sends_only_the_refresh_cookie_on_a_connection_of_its_own(
        self, backend, client, settings, monkeypatch
    ):
        """A pooled connection the backend closed while idle fails after sending: an unknown
        outcome. So every refresh opens a connection (a session) of its own and closes it."""
        settings.AUTH_BACKEND_CONNECT_TIMEOUT = 1.5
        settings.AUTH_REFRESH_TIMEOUT = 77.0
        pooled = fakes.spy_on(monkeypatch, client.session)
        made = fakes.sessions_made(monkeypatch)
        stub = fakes.stub_refresh(backend, refresh="refresh-2")
        fakes.stub_refresh(backend, status=401)

        cookies = client.refresh("refresh-1")
        with pytest.raises(RefreshRefused):
            client.refresh("refresh-2")

        assert {c.name: c.value for c in cookies}["refresh_token"] == "refresh-2"
        sent = stub.calls[0].request
        assert sent.headers["Cookie"] == "refresh_token=refresh-1"
        assert sent.headers["Connection"] == "close"
        assert pooled == []
        assert [len(session.calls) for session in made] == [1, 1]
        assert all(session.closed and session.trust_env is False for session in made)
        assert made[0].calls[0]["timeout"] == (1.5, 77.0)
        assert [session.adapters["http://"]._pool_maxsize for session in made] == [1, 1]

    @pytest.mark.parametrize("status", [400, 401, 403])
    def test_refusals(self, backend, client, status):
        fakes.stub_refresh(backend, status=status)
        with pytest.raises(RefreshRefused, match=f"^POST /auth/refresh answered {status}$"):
            client.refresh("refresh-1")

    def test_throttled_is_unavailable_and_never_processed(self, backend, client):
        fakes.stub_refresh(backend, status=429, headers=[("Retry-After", "3")])
        with pytest.raises(BackendUnavailable, match="^POST /auth/refresh was throttled$") as info:
            client.refresh("refresh-1")
        assert info.value.maybe_processed is False
        assert isinstance(info.value.__cause__, Throttled)


class TestMe:
    def test_sends_the_access_cookie_and_returns_a_profile(self, backend, client):
        stub = fakes.stub_me(backend, "evaluator")
        profile = client.me(Tokens(access="acc", refresh="ref"))

        assert profile.id == "2"
        assert (profile.first_name, profile.last_name) == ("Eve", "Evaluator")
        assert profile.roles == ("evaluator",)
        assert stub.calls[0].request.headers["Cookie"] == "access_token=acc"

    def test_bearer_transport(self, backend, client, settings):
        settings.AUTH_BACKEND_TOKEN_TRANSPORT = "bearer"
        stub = fakes.stub_me(backend)
        client.me(Tokens(access="acc", refresh="ref"))
        sent = stub.calls[0].request.headers
        assert sent["Authorization"] == "Bearer acc"
        assert "Cookie" not in sent

    def test_bearer_transport_still_sends_the_refresh_cookie(self, backend, client, settings):
        settings.AUTH_BACKEND_TOKEN_TRANSPORT = "bearer"
        stub = fakes.stub_logout(backend)
        client.logout(Tokens(access="acc", refresh="ref"))
        sent = stub.calls[0].request.headers
        assert (sent["Authorization"], sent["Cookie"]) == ("Bearer acc", "refresh_token=ref")

    @pytest.mark.parametrize("status", [401, 403])
    def test_plain_tokens_refused_are_access_token_rejected(self, backend, client, status):
        fakes.stub_me(backend, status=status, json={"message": "Unauthorized"})
        with pytest.raises(
            AccessTokenRejected,
            match=f"^GET /users/me answered {status}; check AUTH_ACCESS_TOKEN_TO$",
        ):
            client.me(Tokens(access="old"))

    def test_a_token_source_is_renewed_once_and_replayed(self, backend, client):
        fakes.stub_me(backend, status=401)
        fakes.stub_me(backend, "admin")
        source = fakes.Source(Tokens(access="old"), renewed=Tokens(access="new"))
        assert client.me(source).email == "admin@example.com"
        assert source.renewals == 1
        assert [fakes.sent_cookie(c, "access_token") for c in backend.calls] == ["old", "new"]

    def test_a_token_source_refused_with_403_is_refused_for_good(self, backend, client):
        fakes.stub_me(backend, status=403)
        source = fakes.Source(Tokens(access="acc"))
        with pytest.raises(TokensRefused) as info:
            client.me(source)
        assert (info.value.reason, source.renewals) == (Reason.REFUSED, 0)

    def test_a_second_401_is_refused_for_good(self, backend, client):
        fakes.stub_me(backend, status=401)
        source = fakes.Source(Tokens(access="old"), renewed=Tokens(access="new"))
        with pytest.raises(TokensRefused) as info:
            client.me(source)
        assert (info.value.reason, source.renewals) == (Reason.REJECTED_TWICE, 1)

    def test_other_statuses_are_protocol_errors_whoever_asks(self, backend, client):
        fakes.stub_me(backend, status=404)
        source = fakes.Source(Tokens(access="acc"))
        with pytest.raises(BackendProtocolError, match="^GET /users/me answered 404: is AUTH_ME_"):
            client.me(source)
        assert source.renewals == 0  # not a rejection: nothing renewed, nothing refused

    @pytest.mark.parametrize(
        ("body", "problem"),
        [
            ("<html>oops</html>", "answered no JSON object"),
            ("[]", "answered no JSON object"),
            (
                '{"id": true, "email": "a@example.com", "roles": []}',
                "answered no usable id at 'id'; check AUTH_ME_ID_PATH; "
                'the answer was {"id": <bool>, "email": <str>, "roles": []}',
            ),
            (
                '{"id": 1.5, "email": "a@example.com", "roles": []}',
                "answered no usable id at 'id'; check AUTH_ME_ID_PATH; "
                'the answer was {"id": <float>, "email": <str>, "roles": []}',
            ),
            (
                '{"id": 1, "mail": "a@example.com", "roles": []}',
                "answered no email at 'email'; found mail: set AUTH_ME_EMAIL_PATH=mail",
            ),
            (
                '{"id": 1, "email": "a@example.com", "roles": [1]}',
                "'s 'roles' holds roles of no known shape: a list holding <int>; check "
                'AUTH_ROLE_NAME_KEY; the answer was {"id": <int>, "email": <str>, '
                '"roles": [<int>]}',
            ),
            (
                '{"id": 1, "email": "a@example.com", "role": {"id": 1, "name": "Admin"}}',
                "'s 'roles' holds no roles; found role: set AUTH_ME_ROLES_PATH=role",
            ),
        ],
    )
    def test_unusable_profiles_are_protocol_errors_that_name_the_setting(
        self, backend, client, body, problem
    ):
        fakes.stub_me(backend, body=body)
        with pytest.raises(BackendProtocolError) as info:
            client.me(Tokens(access="acc"))
        assert str(info.value) == f"GET /users/me{'' if problem[0] == chr(39) else ' '}{problem}"
        assert "a@example.com" not in str(info.value), "a value went into the message"

    @pytest.mark.parametrize(
        ("names", "shown"),
        [({"firstName": 5, "lastName": [1]}, ("", "")), ({"lastName": None}, ("", ""))],
    )
    def test_a_profile_is_normalised(self, backend, client, names, shown):
        fakes.stub_me(
            backend, json={"id": "x" * 200, "email": "a@example.com", "roles": [], **names}
        )
        profile = client.me(Tokens(access="acc"))
        assert profile.id == "x" * 128
        assert (profile.first_name, profile.last_name, profile.roles) == (*shown, ())


class TestRequest:
    def test_plain_tokens_get_their_401_back(self, backend, client):
        backend.get(f"{fakes.BASE}/users/me", status=401)
        assert client.request("GET", "/users/me", auth=Tokens(access="a")).status == 401
        assert len(backend.calls) == 1

    def test_the_replay_sends_body_query_and_headers_again(self, backend, client):
        notes = f"{fakes.BASE}/users/notes"
        backend.post(notes, status=401)
        backend.post(notes, status=201, json={"id": 9})
        source = fakes.Source(Tokens(access="old"), renewed=Tokens(access="new"))

        answer = client.request(
            "POST",
            "/users/notes",
            auth=source,
            params="draft=1",
            body=b'{"text": "hi"}',
            headers={"Content-Type": "application/json"},
        )

        assert (answer.status, answer.data) == (201, {"id": 9})
        first, replay = (c.request for c in backend.calls)
        assert first.body == replay.body == b'{"text": "hi"}'
        assert replay.headers["Content-Type"] == "application/json"
        assert replay.url == f"{notes}?draft=1"
        assert fakes.sent_cookie(backend.calls[1], "access_token") == "new"

    def test_the_browsers_cookie_header_never_replaces_the_tokens(self, backend, client):
        backend.get(f"{fakes.BASE}/users/me", json={})
        client.request("GET", "/users/me", auth=Tokens(access="acc"), headers={"Cookie": "s=1"})
        assert backend.calls[0].request.headers["Cookie"] == "access_token=acc"

    def test_unusable_token_values_are_not_sent(self, backend, client):
        backend.get(f"{fakes.BASE}/users/me", json={})
        client.request("GET", "/users/me", auth=Tokens(access="a b", refresh="r"))
        assert "Cookie" not in backend.calls[0].request.headers


class TestLogoutAndPing:
    def test_logout_sends_both_tokens_and_returns_clearing_cookies(self, backend, client):
        stub = fakes.stub_logout(backend)
        cookies = client.logout(Tokens(access="acc", refresh="ref"))
        assert stub.calls[0].request.headers["Cookie"] == "access_token=acc; refresh_token=ref"
        assert cookies and all(c.deletes for c in cookies)

    @pytest.mark.parametrize(("status", "ok"), [(401, True), (204, True), (202, False)])
    def test_logout_statuses(self, backend, client, status, ok):
        backend.post(f"{fakes.BASE}/auth/logout", status=status)
        if ok:
            assert client.logout(Tokens(refresh="ref")) == []
        else:
            with pytest.raises(BackendProtocolError, match=f"^POST /auth/logout answered {status}"):
                client.logout(Tokens(refresh="ref"))

    def test_ping_reports_any_status_below_500(self, backend, client, settings, monkeypatch):
        settings.AUTH_HEALTH_PATH = "/health"
        settings.AUTH_HEALTH_TIMEOUT = 0.5
        seen = fakes.spy_on(monkeypatch, client.session)
        backend.get(f"{fakes.BASE}/health", status=401)
        assert client.ping() == 401
        assert seen[0]["timeout"] == 0.5
        assert "Cookie" not in backend.calls[0].request.headers


class TestMetricLabels:
    """Each backend call is reported (accounts/signals.py `backend_called`) under its
    endpoint's name: given by the client's own methods, else found by the path."""

    @staticmethod
    def endpoints(do) -> list[str]:
        from accounts import signals

        with fakes.heard(signals.backend_called, "endpoint") as heard:
            do()
        return heard

    def test_logout_and_ping_name_themselves(self, backend, client, settings):
        settings.AUTH_HEALTH_PATH = "/health"
        fakes.stub_logout(backend)
        backend.get(f"{fakes.BASE}/health", status=200)
        assert self.endpoints(lambda: client.logout(Tokens(refresh="ref"))) == ["logout"]
        assert self.endpoints(client.ping) == ["health"]

    @pytest.mark.parametrize(
        ("path", "endpoint"),
        [
            ("/health", "health"),
            ("/auth/login", "login"),
            ("/auth/refresh", "refresh"),
            ("/auth/logout", "logout"),
            ("/users/me", "me"),
            ("/reports/7", "proxy"),
        ],
    )
    def test_a_call_without_a_name_is_named_by_its_path(
        self, backend, client, settings, path, endpoint
    ):
        settings.AUTH_HEALTH_PATH = "/health"
        backend.post(f"{fakes.BASE}{path}", status=200)
        assert self.endpoints(lambda: client.call("POST", path)) == [endpoint]


class TestResponseCaps:
    @pytest.mark.parametrize(
        ("size", "declared", "error"),
        [
            (100, False, None),
            (100, True, None),
            (101, False, "GET /users/me answered more than 100 bytes"),
            (101, True, "GET /users/me answered 101 bytes (limit 100)"),
        ],
    )
    def test_at_most_the_limit_is_read(self, backend, client, settings, size, declared, error):
        settings.AUTH_BACKEND_MAX_RESPONSE_BYTES = 100
        headers = {"Content-Length": str(size)} if declared else {}
        backend.get(f"{fakes.BASE}/users/me", body=b"x" * size, headers=headers)
        if error is None:
            assert len(client.request("GET", "/users/me", auth=Tokens()).content) == size
        else:
            with pytest.raises(BackendProtocolError) as info:
                client.request("GET", "/users/me", auth=Tokens())
            assert (str(info.value), info.value.maybe_processed) == (error, True)

    def test_the_limit_counts_every_chunk(self, backend, client, settings):
        settings.AUTH_BACKEND_MAX_RESPONSE_BYTES = 100_000
        body = bytes(range(256)) * 300  # 76,800 bytes: two chunks of a read
        backend.get(f"{fakes.BASE}/users/me", body=body)
        assert client.request("GET", "/users/me", auth=Tokens()).content == body
        backend.get(f"{fakes.BASE}/users/notes", body=body * 2)  # no chunk alone is too big
        with pytest.raises(BackendProtocolError):
            client.request("GET", "/users/notes", auth=Tokens())

    def test_json_larger_than_a_megabyte_is_not_parsed(self, backend, client):
        backend.get(f"{fakes.BASE}/users/me", body=b'"' + b"x" * (1024 * 1024) + b'"')
        assert client.request("GET", "/users/me", auth=Tokens()).data is None


class TestClientClass:
    def test_get_client_uses_the_configured_subclass_and_its_headers(self, backend, settings):
        settings.AUTH_CLIENT_CLASS = "tests.test_client.TenantClient"
        shared = get_client()
        assert type(shared) is TenantClient and get_client() is shared
        fakes.stub_me(backend)
        fakes.stub_refresh(backend)
        shared.me(Tokens(access="acc"))
        shared.refresh("refresh-1")
        for call in backend.calls:
            assert call.request.headers["X-Tenant"] == "acme"
            assert call.request.headers["Accept"] == "application/vnd.acme+json"

    def test_the_default_class(self):
        assert type(get_client()) is AuthApiClient


@responses.activate
def test_messages_never_hold_tokens(settings):
    settings.API_BASEURL = fakes.BASE
    responses.get(f"{fakes.BASE}/users/me", status=418)
    with pytest.raises(BackendProtocolError) as info:
        AuthApiClient().me(Tokens(access="secret-access", refresh="secret-refresh"))
    assert str(info.value) == "GET /users/me answered 418"


def test_the_adapter_builds_the_response_and_leaves_cookies_to_the_client():
    from urllib3 import HTTPResponse

    from accounts.client import _Adapter

    prepared = requests.Request("GET", "http://api.test/users/me").prepare()
    raw = HTTPResponse(
        body=io.BytesIO('{"name": "Zoë"}'.encode()),
        headers={"Set-Cookie": "access_token=a", "Content-Type": "application/json; charset=utf-8"},
        status=201,
        reason="Created",
        preload_content=False,
    )
    response = _Adapter().build_response(prepared, raw)
    assert (response.status_code, response.reason) == (201, "Created")
    assert response.headers["set-cookie"] == "access_token=a"
    assert response.encoding == "utf-8"
    assert response.url == "http://api.test/users/me"
    assert response.request is prepared
    assert len(response.cookies) == 0, "Set-Cookie is parsed by accounts/cookies.py only"
    assert response.json() == {"name": "Zoë"}


class TestExactSession:
    """The proxy's sender (accounts/client.py `_ExactSession`): exactly what it was given."""

    @pytest.mark.parametrize(
        "kwargs",
        [{"json": {"a": 1}}, {"allow_redirects": True}, {"stream": False}, {"params": {"a": "1"}}],
    )
    def test_refuses_what_it_cannot_send_exactly(self, kwargs):
        from accounts.client import _ExactSession

        exact = _ExactSession(requests.Session())
        with pytest.raises(TypeError, match="^_ExactSession sends a body of bytes and a ready"):
            exact.request("GET", f"{fakes.BASE}/x", headers={}, timeout=1, **kwargs)

    def test_sends_the_url_as_built_streamed_with_the_callers_timeout_and_no_proxies(self, backend):
        from accounts.client import _ExactSession, _session

        backend.post(f"{fakes.BASE}/items/%41", body="ok")
        session = _session()
        session.verify = "/etc/ssl/certs/ca-certificates.crt"
        response = _ExactSession(session).request(
            "POST",
            f"{fakes.BASE}/items/%41",
            params="q=%2F&r=1",
            data=b"\xc3\xa9",
            headers={"X-One": "1"},
            timeout=(1.5, 2.5),
        )

        assert response.status_code == 200
        sent = backend.calls[0].request
        assert sent.url == f"{fakes.BASE}/items/%41?q=%2F&r=1"
        assert sent.body == b"\xc3\xa9"
        assert sent.headers["X-One"] == "1"
        assert "Accept-Encoding" not in sent.headers
        assert sent.req_kwargs["timeout"] == (1.5, 2.5)
        assert sent.req_kwargs["stream"] is True
        assert sent.req_kwargs["verify"] == "/etc/ssl/certs/ca-certificates.crt"
        assert sent.req_kwargs["proxies"] == {}


class TestBackendSession:
    """Every other call (accounts/client.py `_BackendSession`): what reaches the adapter."""

    def test_a_call_is_streamed_with_the_timeout_and_the_sessions_tls_settings(
        self, backend, settings
    ):
        settings.AUTH_BACKEND_TIMEOUT = 2.5
        settings.AUTH_BACKEND_CONNECT_TIMEOUT = 0.5
        backend.get(f"{fakes.BASE}/users/me", json=fakes.PROFILES["admin"])
        client = AuthApiClient()
        client.session.verify = "/etc/ssl/certs/ca-certificates.crt"
        client.session.cert = ("certs/client.pem", "certs/client.key")
        client.me(Tokens(access="a-1", refresh="r-1"))

        sent = backend.calls[0].request
        assert sent.method == "GET"
        assert sent.req_kwargs["timeout"] == (0.5, 2.5)
        assert sent.req_kwargs["stream"] is True
        assert sent.req_kwargs["verify"] == "/etc/ssl/certs/ca-certificates.crt"
        assert sent.req_kwargs["cert"] == ("certs/client.pem", "certs/client.key")

    def test_redirects_are_refused_before_anything_is_sent(self, backend):
        from accounts.client import _session

        with pytest.raises(ValueError, match="^calls to the auth backend never follow redirects$"):
            _session().request("GET", f"{fakes.BASE}/x", allow_redirects=True)
        assert len(backend.calls) == 0

    def test_a_lower_case_method_goes_out_upper_case(self, backend):
        from accounts.client import _session

        backend.post(f"{fakes.BASE}/x", body="ok")
        _session().request("post", f"{fakes.BASE}/x")
        assert backend.calls[0].request.method == "POST"
