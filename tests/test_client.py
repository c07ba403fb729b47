"""The backend client: outgoing requests, timeouts and the mapping of failures."""

import json

import pytest
import requests
import responses

from accounts.client import AuthApiClient, Tokens, get_client
from accounts.exceptions import (
    BackendProtocolError,
    BackendUnavailable,
    InvalidCredentials,
    SessionExpired,
    Throttled,
)
from tests import fakes


@pytest.fixture
def client():
    return AuthApiClient()


class TestLogin:
    def test_posts_json_and_returns_every_cookie(self, backend, client):
        stub = fakes.stub_login(backend)
        cookies = client.login("admin@example.com", "pw", client_ip="203.0.113.5")

        assert [c.name for c in cookies] == ["access_token", "refresh_token"]
        sent = stub.calls[0].request
        assert json.loads(sent.body) == {"email": "admin@example.com", "password": "pw"}
        assert sent.headers["X-Forwarded-For"] == "203.0.113.5"
        assert "Cookie" not in sent.headers

    @pytest.mark.parametrize("status", [400, 401, 403])
    def test_refusals_are_invalid_credentials(self, backend, client, status):
        fakes.stub_login(backend, status=status, json={"message": "nope"})
        with pytest.raises(InvalidCredentials):
            client.login("a@example.com", "pw")

    def test_429_carries_retry_after(self, backend, client):
        fakes.stub_login(backend, status=429, headers=[("Retry-After", "42")])
        with pytest.raises(Throttled) as info:
            client.login("a@example.com", "pw")
        assert info.value.retry_after == 42

    def test_429_without_a_usable_retry_after_gets_a_default(self, backend, client):
        fakes.stub_login(backend, status=429, headers=[("Retry-After", "soon")])
        with pytest.raises(Throttled) as info:
            client.login("a@example.com", "pw")
        assert info.value.retry_after == 60

    @pytest.mark.parametrize("status", [500, 502, 503, 504])
    def test_5xx_is_unavailable(self, backend, client, status):
        fakes.stub_login(backend, status=status)
        with pytest.raises(BackendUnavailable):
            client.login("a@example.com", "pw")

    @pytest.mark.parametrize(
        "error", [requests.ConnectTimeout(), requests.ReadTimeout(), requests.ConnectionError()]
    )
    def test_network_failures_are_unavailable(self, backend, client, error):
        backend.post(f"{fakes.BASE}/auth/login", body=error)
        with pytest.raises(BackendUnavailable):
            client.login("a@example.com", "pw")

    def test_success_without_the_access_cookie_is_a_protocol_error(self, backend, client):
        fakes.stub_login(backend, headers=[("Set-Cookie", "unrelated=1; Path=/")])
        with pytest.raises(BackendProtocolError):
            client.login("a@example.com", "pw")

    def test_redirect_is_a_protocol_error_and_not_followed(self, backend, client):
        fakes.stub_login(backend, status=302, headers=[("Location", "http://evil.example/")])
        with pytest.raises(BackendProtocolError):
            client.login("a@example.com", "pw")
        assert len(backend.calls) == 1

    def test_every_call_has_a_timeout(self, backend, settings, monkeypatch, client):
        settings.AUTH_BACKEND_CONNECT_TIMEOUT = 1.5
        settings.AUTH_BACKEND_TIMEOUT = 4.0
        seen = {}
        original = client.session.request

        def spy(*args, **kwargs):
            seen["timeout"] = kwargs["timeout"]
            return original(*args, **kwargs)

        monkeypatch.setattr(client.session, "request", spy)
        fakes.stub_login(backend)
        client.login("a@example.com", "pw")
        assert seen["timeout"] == (1.5, 4.0)

    def test_the_shared_session_keeps_no_cookies(self, backend):
        fakes.stub_login(backend)
        fakes.stub_me(backend)
        shared = get_client()
        shared.login("admin@example.com", "pw")
        assert len(shared.session.cookies) == 0
        shared.me(Tokens())
        assert "Cookie" not in backend.calls[-1].request.headers


class TestMe:
    def test_sends_the_access_cookie_and_returns_a_profile(self, backend, client):
        stub = fakes.stub_me(backend, "evaluator")
        profile = client.me(Tokens(access="acc", refresh="ref"))

        assert profile.id == "2"
        assert profile.full_name == "Eve Evaluator"
        assert profile.roles == ("evaluator",)
        assert stub.calls[0].request.headers["Cookie"] == "access_token=acc"

    def test_bearer_transport(self, backend, client, settings):
        settings.AUTH_BACKEND_TOKEN_TRANSPORT = "bearer"
        stub = fakes.stub_me(backend)
        client.me(Tokens(access="acc", refresh="ref"))
        sent = stub.calls[0].request.headers
        assert sent["Authorization"] == "Bearer acc"
        assert "Cookie" not in sent

    def test_401_is_session_expired(self, backend, client):
        fakes.stub_me(backend, status=401, json={"message": "Unauthorized"})
        with pytest.raises(SessionExpired):
            client.me(Tokens(access="old"))

    @pytest.mark.parametrize(
        "body",
        [
            "<html>oops</html>",
            "[]",
            '{"email": "a@example.com", "roles": []}',
            '{"id": true, "email": "a@example.com", "roles": []}',
            '{"id": 1, "email": "a@example.com", "roles": "admin"}',
            '{"id": 1, "email": "a@example.com", "roles": [1]}',
            '{"id": 1, "roles": []}',
        ],
    )
    def test_unusable_profiles_are_protocol_errors(self, backend, client, body):
        fakes.stub_me(backend, body=body)
        with pytest.raises(BackendProtocolError):
            client.me(Tokens(access="acc"))


class TestLogout:
    def test_sends_both_tokens_and_returns_clearing_cookies(self, backend, client):
        stub = fakes.stub_logout(backend)
        cookies = client.logout(Tokens(access="acc", refresh="ref"))
        assert stub.calls[0].request.headers["Cookie"] == "access_token=acc; refresh_token=ref"
        assert all(c.deletes for c in cookies)


@responses.activate
def test_messages_never_hold_tokens(settings):
    settings.API_BASEURL = fakes.BASE
    responses.get(f"{fakes.BASE}/users/me", status=418)
    with pytest.raises(BackendProtocolError) as info:
        AuthApiClient().me(Tokens(access="secret-access", refresh="secret-refresh"))
    assert "secret" not in str(info.value)
    assert "418" in str(info.value)
