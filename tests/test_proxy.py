"""`/api/<path>`: the same-origin proxy to the auth backend."""

import pytest

from accounts.proxy import allowed_path
from tests import fakes
from tests.fakes import calls_to, make_user


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("users/me", "/users/me"),
        ("users/42/notes", "/users/42/notes"),
        ("users/", "/users/"),
        ("users/../auth/refresh", None),
        ("users/%2e%2e/auth/refresh", None),
        ("users%2F..%2Fauth/refresh", None),
        ("users/..%2Fauth", None),
        ("users//me", None),
        ("users/%2F%2Fevil", None),
        ("users\\..\\auth", None),
        ("users/%5c..", None),
        ("auth/refresh", None),
        ("auth/logout", None),
        ("usersX/me", None),
        ("", None),
        ("./users/me", None),
        ("users/%00", None),
    ],
)
def test_allow_list_after_normalisation(path, expected):
    assert allowed_path(path) == expected


class TestProxy:
    def test_get_passes_query_and_attaches_the_token(self, signed_in, backend):
        access = fakes.access_jwt()
        client = signed_in(access=access)
        backend.get(f"{fakes.BASE}/users/me", json={"id": 1}, headers={"ETag": '"v1"'})

        response = client.get("/api/users/me?fields=id&x=%20y")

        assert response.status_code == 200
        assert response.json() == {"id": 1}
        assert response["ETag"] == '"v1"'
        call = calls_to(backend, "/users/me")[0]
        assert call.request.url == f"{fakes.BASE}/users/me?fields=id&x=%20y"
        assert fakes.sent_cookie(call, "access_token") == access
        # The browser's own cookies (session, CSRF) never reach the backend.
        assert fakes.sent_cookie(call, "sessionid") is None

    @pytest.mark.parametrize("method", ["put", "patch", "delete"])
    def test_unsafe_methods_pass_body_and_content_type(self, signed_in, backend, method):
        client = signed_in(access=fakes.access_jwt())
        backend.add(method.upper(), f"{fakes.BASE}/users/1", status=204)
        response = getattr(client, method)(
            "/api/users/1", data="a=1&b=2", content_type="application/x-www-form-urlencoded"
        )
        assert response.status_code == 204
        sent = calls_to(backend, "/users/1")[0].request
        assert sent.body == b"a=1&b=2"
        assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"

    def test_hop_by_hop_headers_and_backend_cookies_never_come_back(self, signed_in, backend):
        """New contract: the proxy relays no backend cookie at all; tokens change only at
        sign-in and refresh, which the session records."""
        client = signed_in(access=fakes.access_jwt())
        backend.get(
            f"{fakes.BASE}/users/me",
            json={"id": 1},
            headers=[
                ("Connection", "close"),
                ("Keep-Alive", "timeout=5"),
                ("X-Powered-By", "Express"),
                ("Set-Cookie", "sessionid=attacker; Path=/"),
                ("Set-Cookie", "access_token=relayed-value; Max-Age=60; Path=/; Domain=api.test"),
            ],
        )
        response = client.get("/api/users/me")
        for header in ("Connection", "Keep-Alive", "X-Powered-By"):
            assert header not in response
        assert response.cookies.get("sessionid") is None or (
            response.cookies["sessionid"].value != "attacker"
        )
        assert "access_token" not in response.cookies
        assert "relayed-value" not in str(response.cookies)

    def test_outside_the_allow_list_is_404_without_a_backend_call(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt())
        for path in ("/api/auth/refresh", "/api/users/../auth/logout", "/api/users%2F..%2Fauth"):
            response = client.get(path)
            assert response.status_code == 404
            assert response.json()["error"] == "not_found"
        assert len(backend.calls) == 0

    def test_anonymous_is_401_json(self, client, db, backend):
        client.cookies["access_token"] = fakes.access_jwt()
        response = client.get("/api/users/me")
        assert response.status_code == 401
        assert response.json()["error"] == "signed_out"
        assert len(backend.calls) == 0

    def test_other_methods_are_405(self, signed_in, backend):
        response = signed_in(access=fakes.access_jwt()).options("/api/users/me")
        assert response.status_code == 405

    def test_unsafe_methods_need_csrf(self, csrf_client, locmem_cache, backend):
        csrf_client.force_login(make_user("admin"))
        csrf_client.cookies["access_token"] = fakes.access_jwt()
        csrf_client.cookies["refresh_token"] = "refresh-1"
        response = csrf_client.post("/api/users/notes", data="{}", content_type="application/json")
        assert response.status_code == 403
        assert response.json()["error"] == "csrf"
        assert len(backend.calls) == 0

    def test_backend_throttling_is_passed_on(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt())
        backend.get(f"{fakes.BASE}/users/me", status=429, headers={"Retry-After": "9"})
        response = client.get("/api/users/me")
        assert response.status_code == 429
        assert response["Retry-After"] == "9"

    def test_oversized_body_is_413(self, signed_in, backend, settings):
        settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
        client = signed_in(access=fakes.access_jwt())
        response = client.post("/api/users/notes", data="x" * 500, content_type="text/plain")
        assert response.status_code == 413
        assert len(backend.calls) == 0
