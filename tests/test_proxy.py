"""`/api/<path>`: the same-origin proxy to the auth backend."""

import http.client
import io
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from accounts.proxy import SANDBOX_POLICY, allowed_path
from tests import fakes
from tests.fakes import calls_to, make_user
from tests.flows import csrf_headers, sign_in
from tests.servers import running_app, running_authapi


# `path` is what Django's URL routing hands the view: the browser's path,
# decoded once (the WSGI server decodes PATH_INFO).
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("users/me", "/users/me"),
        ("users/42/notes", "/users/42/notes"),
        ("users/", "/users/"),
        # Encoded again for the wire: the backend decodes it back to `path`.
        ("users/me?x=1", "/users/me%3Fx=1"),
        ("users/a#b", "/users/a%23b"),
        ("users/100%", "/users/100%25"),
        ("users/a b", "/users/a%20b"),
        ("users/\u20ac", "/users/%E2%82%AC"),
        ("users/me;v=1,2", "/users/me;v=1,2"),
        ("users/a:b@c!$&'()*+=", "/users/a:b@c!$&'()*+="),
        ("users/%2541", "/users/%252541"),
        # A backend that decodes twice would see these as dot or empty segments.
        ("users/%2e%2e/auth/refresh", None),
        ("users/%2E%2E/auth/refresh", None),
        ("users/%2e/me", None),
        ("users%2F..%2Fauth/refresh", None),
        ("users/%2F%2Fevil", None),
        ("users/%5c..", None),
        ("users/%00", None),
        # Some servers (Tomcat, Jetty) drop `;params` and would see `..`.
        ("users/..;/auth/refresh", None),
        ("users/.;x/me", None),
        ("users/..", None),
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
        ("users/\x00", None),
        ("/users/me", None),
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

    @pytest.mark.parametrize("transport", ["bearer", "body"])
    def test_without_cookie_transport_no_cookie_at_all_reaches_the_backend(
        self, signed_in, backend, settings, transport
    ):
        """The client writes no Cookie header of its own here, so one the browser sent
        would go through untouched if the proxy forwarded it."""
        settings.AUTH_BACKEND_TOKEN_TRANSPORT = transport
        access = fakes.access_jwt()
        client = signed_in(access=access)
        client.cookies["theme"] = "dark"
        backend.get(f"{fakes.BASE}/users/me", json={"id": 1})

        assert client.get("/api/users/me").status_code == 200

        sent = calls_to(backend, "/users/me")[0].request.headers
        assert sent["Authorization"] == f"Bearer {access}"
        assert "Cookie" not in sent

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

    def test_multipart_post_is_refused_not_a_500(self, csrf_client, locmem_cache, backend):
        """CsrfViewMiddleware parses a POST's form (for its token), consuming a multipart body."""
        fakes.sign_in_client(csrf_client, "admin", access=fakes.access_jwt())
        csrf_client.get("/accounts/login/")
        token = csrf_client.cookies["csrftoken"].value
        response = csrf_client.post("/api/users/notes", {"csrfmiddlewaretoken": token, "a": "1"})
        assert response.status_code == 415
        assert response.json()["error"] == "unsupported_body"
        assert len(backend.calls) == 0

    def test_form_encoded_post_with_the_token_in_the_form_is_forwarded(
        self, csrf_client, locmem_cache, backend
    ):
        fakes.sign_in_client(csrf_client, "admin", access=fakes.access_jwt())
        csrf_client.get("/accounts/login/")
        token = csrf_client.cookies["csrftoken"].value
        backend.post(f"{fakes.BASE}/users/notes", status=201, json={})
        body = f"csrfmiddlewaretoken={token}&a=1"
        response = csrf_client.post(
            "/api/users/notes", body, content_type="application/x-www-form-urlencoded"
        )
        assert response.status_code == 201
        assert backend.calls[0].request.body == body.encode()

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

    def test_oversized_declared_body_is_413_before_reading(self, signed_in, backend, settings):
        settings.AUTH_PROXY_MAX_BODY_BYTES = 10
        client = signed_in(access=fakes.access_jwt())
        response = client.put("/api/users/1", data="x" * 11, content_type="text/plain")
        assert response.status_code == 413
        assert len(backend.calls) == 0


class TestExactPath:
    """What the browser encoded stays encoded: the backend decodes it once, as Django did."""

    def test_encoded_question_mark_reaches_the_backend_as_part_of_the_path(
        self, signed_in, backend
    ):
        client = signed_in(access=fakes.access_jwt())
        backend.get(f"{fakes.BASE}/users/me%3Fx=1", json={"id": 1})

        response = client.get("/api/users/me%3Fx=1")

        assert response.status_code == 200
        (call,) = backend.calls
        assert call.request.url == f"{fakes.BASE}/users/me%3Fx=1"

    @pytest.mark.parametrize(
        ("browser_path", "backend_path"),
        [
            ("/api/users/a%2520b", "/users/a%2520b"),
            ("/api/users/%E2%82%AC", "/users/%E2%82%AC"),
            ("/api/users/%23frag", "/users/%23frag"),
            ("/api/users/100%25", "/users/100%25"),
            ("/api/users/me;v=1", "/users/me;v=1"),
        ],
    )
    def test_other_encodings_reach_the_backend_unchanged(
        self, signed_in, backend, browser_path, backend_path
    ):
        client = signed_in(access=fakes.access_jwt())
        backend.get(f"{fakes.BASE}{backend_path}", json={})
        assert client.get(browser_path).status_code == 200
        assert backend.calls[0].request.url == f"{fakes.BASE}{backend_path}"

    def test_query_string_goes_out_byte_for_byte(self, signed_in, backend):
        """requests would re-quote it (`%41` to `A`) or refuse it (`%zz`)."""
        client = signed_in(access=fakes.access_jwt())
        backend.get(f"{fakes.BASE}/users/me", json={})
        response = client.get("/api/users/me?b=%41&c=%zz&d=a+b&e=%2e%2e")
        assert response.status_code == 200
        assert backend.calls[0].request.url == (f"{fakes.BASE}/users/me?b=%41&c=%zz&d=a+b&e=%2e%2e")

    def test_raw_non_ascii_in_the_query_is_percent_encoded(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt())
        backend.get(f"{fakes.BASE}/users/me", json={})
        # As a WSGI server hands it over: the bytes as latin-1 (PEP 3333).
        response = client.get("/api/users/me", QUERY_STRING="q=\u20ac".encode().decode("latin-1"))
        assert response.status_code == 200
        assert backend.calls[0].request.url == f"{fakes.BASE}/users/me?q=%E2%82%AC"

    def test_twice_encoded_dot_segments_never_reach_the_backend(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt())
        for path in ("/api/users/%252e%252e/auth/refresh", "/api/users/..%3B/auth/refresh"):
            assert client.get(path).status_code == 404
        assert len(backend.calls) == 0


def chunked_post(client, path: str, body: bytes, *, terminated: bool = True):
    """POST `body` as gunicorn hands a chunked request to Django: no Content-Length,
    `Transfer-Encoding: chunked`, a stream that ends with the body (when the
    server sets `wsgi.input_terminated`)."""
    extra = {
        "CONTENT_LENGTH": "",
        "CONTENT_TYPE": "application/json",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "wsgi.input": io.BytesIO(body),
    }
    if terminated:
        extra["wsgi.input_terminated"] = True
    return client.generic("POST", path, **extra)


class TestChunkedBody:
    def test_chunked_body_is_forwarded_whole(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt())
        backend.post(f"{fakes.BASE}/users/notes", status=201, json={"ok": True})
        body = b'{"note": "' + b"n" * 200_000 + b'"}'  # several reads of the stream

        response = chunked_post(client, "/api/users/notes", body)

        assert response.status_code == 201
        sent = calls_to(backend, "/users/notes")[0].request
        assert sent.body == body
        assert sent.headers["Content-Length"] == str(len(body))
        assert sent.headers["Content-Type"] == "application/json"

    def test_chunked_body_over_the_limit_is_413(self, signed_in, backend, settings):
        settings.AUTH_PROXY_MAX_BODY_BYTES = 1000
        client = signed_in(access=fakes.access_jwt())
        assert chunked_post(client, "/api/users/notes", b"x" * 1000).status_code != 413
        response = chunked_post(client, "/api/users/notes", b"x" * 1001)
        assert response.status_code == 413
        assert response.json()["error"] == "too_large"
        assert len(calls_to(backend, "/users/notes")) == 1

    def test_chunked_body_the_server_does_not_delimit_is_411(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt())
        response = chunked_post(client, "/api/users/notes", b"{}", terminated=False)
        assert response.status_code == 411
        assert response.json()["error"] == "length_required"
        assert len(backend.calls) == 0


class TestServedAsData:
    """A backend answer is data, never a page of this origin."""

    @pytest.mark.parametrize(
        "content_type", ["application/json", "application/problem+json; charset=utf-8"]
    )
    def test_json_is_inline_sandboxed_and_not_sniffed(self, signed_in, backend, content_type):
        client = signed_in(access=fakes.access_jwt())
        backend.get(f"{fakes.BASE}/users/me", body=b"{}", content_type=content_type)
        response = client.get("/api/users/me")
        assert response.status_code == 200
        assert response["Content-Type"] == content_type
        # Through the real MIDDLEWARE: django-csp's middleware keeps the view's policy.
        assert response["Content-Security-Policy"] == "sandbox; default-src 'none'"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert "Content-Disposition" not in response

    @pytest.mark.parametrize(
        "content_type",
        ["text/html; charset=utf-8", "text/javascript", "image/svg+xml", "text/plain"],
    )
    def test_other_types_are_attachments(self, signed_in, backend, content_type):
        client = signed_in(access=fakes.access_jwt())
        backend.get(
            f"{fakes.BASE}/users/me", body=b"<script>alert(1)</script>", content_type=content_type
        )
        response = client.get("/api/users/me")
        assert response["Content-Type"] == content_type
        assert response["Content-Disposition"] == "attachment"
        assert response["Content-Security-Policy"] == SANDBOX_POLICY
        assert response["X-Content-Type-Options"] == "nosniff"

    def test_no_content_type_is_an_octet_stream_attachment(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt())
        backend.get(f"{fakes.BASE}/users/me", body=b"<html>", content_type=None)
        response = client.get("/api/users/me")
        assert response["Content-Type"] == "application/octet-stream"
        assert response["Content-Disposition"] == "attachment"

    def test_inline_types_setting_allows_a_type(self, signed_in, backend, settings):
        settings.AUTH_PROXY_INLINE_TYPES = ["application/json", "Text/Plain"]
        client = signed_in(access=fakes.access_jwt())
        backend.get(f"{fakes.BASE}/users/me", body=b"hi", content_type="text/plain; charset=utf-8")
        backend.get(f"{fakes.BASE}/users/page", body=b"<p>", content_type="text/html")
        assert "Content-Disposition" not in client.get("/api/users/me")
        assert client.get("/api/users/page")["Content-Disposition"] == "attachment"

    def test_proxy_errors_carry_the_app_policy_not_the_sandbox(self, signed_in, backend):
        """The proxy's own JSON errors are the app's answers, under the site-wide policy."""
        client = signed_in(access=fakes.access_jwt())
        response = client.get("/api/auth/refresh")
        assert response.status_code == 404
        assert "sandbox" not in response["Content-Security-Policy"]


# --- Over real HTTP: the app under gunicorn, the reference API, and a tap between them ---


@dataclass
class Seen:
    method: str
    target: str  # the request line's target, exactly as it arrived
    headers: dict[str, str]
    body: bytes


class BackendTap:
    """A real HTTP hop in front of the reference API that records what reaches it.

    Every request is forwarded as it came (request target, headers, body) and
    the API's answer returned as it came, so the app signs in and refreshes
    through it as through the API itself.
    """

    def __init__(self, upstream_url: str):
        self.upstream = urlsplit(upstream_url)
        self.seen: list[Seen] = []
        tap = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                tap.seen.append(Seen(self.command, self.path, dict(self.headers), body))
                upstream = http.client.HTTPConnection(
                    tap.upstream.hostname, tap.upstream.port, timeout=10
                )
                try:
                    upstream.putrequest(self.command, self.path, skip_host=True)
                    for name, value in self.headers.items():
                        if name.lower() != "connection":
                            upstream.putheader(name, value)
                    upstream.endheaders(body or None)
                    answer = upstream.getresponse()
                    content = answer.read()
                finally:
                    upstream.close()
                self.send_response_only(answer.status, answer.reason)
                for name, value in answer.getheaders():
                    if name.lower() not in ("connection", "content-length", "transfer-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = forward

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "BackendTap":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The reference API, a tap in front of it, the app under gunicorn; a signed-in browser."""
    work = tmp_path_factory.mktemp("proxy")
    (work / "api").mkdir()
    with (
        running_authapi(work / "api") as api,
        BackendTap(api.url) as tap,
        running_app(work, api_url=tap.url, workers=1, AUTH_PROXY_MAX_BODY_BYTES="4096") as app,
    ):
        yield app, tap, sign_in(app.url)


class TestOverRealHttp:
    def test_encoded_path_reaches_the_api_encoded(self, live):
        app, tap, browser = live
        before = len(tap.seen)

        response = browser.get(f"{app.url}/api/users/me%3Fx=1", timeout=10)

        (seen,) = tap.seen[before:]
        assert (seen.method, seen.target) == ("GET", "/users/me%3Fx=1")
        # The API decoded it once: a path of its own, not /users/me with a query.
        assert response.status_code == 404
        assert response.json()["message"] == "Cannot GET /users/me?x=1"
        assert browser.get(f"{app.url}/api/users/me?x=1", timeout=10).json()["email"]

    def test_chunked_body_reaches_the_api_whole(self, live):
        app, tap, browser = live
        body = b"z" * 3000
        before = len(tap.seen)

        response = browser.post(
            f"{app.url}/api/users/me",
            data=(body[i : i + 700] for i in range(0, len(body), 700)),  # chunked
            headers={**csrf_headers(browser, app.url), "Content-Type": "text/plain"},
            timeout=10,
        )

        (seen,) = tap.seen[before:]
        assert seen.method == "POST"
        assert seen.body == body
        assert seen.headers["Content-Length"] == "3000"
        assert response.status_code == 405  # the API's own answer to POST /users/me
        assert response.request.headers["Transfer-Encoding"] == "chunked"

    def test_chunked_body_over_the_limit_is_413(self, live):
        app, tap, browser = live
        before = len(tap.seen)
        response = browser.post(
            f"{app.url}/api/users/me",
            data=(b"z" * 1024 for _ in range(5)),
            headers=csrf_headers(browser, app.url),
            timeout=10,
        )
        assert response.status_code == 413
        assert response.json()["error"] == "too_large"
        assert tap.seen[before:] == []

    def test_answers_are_sandboxed_data(self, live):
        app, _, browser = live
        response = browser.get(f"{app.url}/api/users/me", timeout=10)
        assert response.status_code == 200
        assert response.headers["Content-Security-Policy"] == SANDBOX_POLICY
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "Content-Disposition" not in response.headers


# --- the body as the proxy reads it, in detail -------------------------------------------


class PiecewiseStream:
    """A chunked request's input as a server decodes it: at most `piece` bytes a read."""

    def __init__(self, body: bytes, piece: int):
        self.rest, self.piece, self.delivered = body, piece, 0

    def read(self, size=-1):
        wanted = self.piece if size is None or size < 0 else min(size, self.piece)
        chunk, self.rest = self.rest[:wanted], self.rest[wanted:]
        self.delivered += len(chunk)
        return chunk

    def readline(self, size=-1):  # Django keeps a reference; the proxy only calls read()
        raise AssertionError("the proxy reads a chunked body with read() alone")


def chunked_request(stream: PiecewiseStream):
    from django.test import RequestFactory

    return RequestFactory().generic(
        "POST",
        "/api/users/notes",
        CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="chunked",
        **{"wsgi.input": stream, "wsgi.input_terminated": True},
    )


class TestReadBody:
    @pytest.fixture(autouse=True)
    def limit(self, settings):
        settings.AUTH_PROXY_MAX_BODY_BYTES = 100

    def test_a_chunked_body_at_the_limit_arriving_in_pieces_is_read_whole(self):
        from accounts.proxy import read_body

        body = bytes(range(100))
        assert read_body(chunked_request(PiecewiseStream(body, piece=30))) == body

    def test_a_chunked_body_one_byte_over_arriving_in_pieces_is_refused(self):
        from django.core.exceptions import RequestDataTooBig

        from accounts.proxy import read_body

        stream = PiecewiseStream(b"x" * 101, piece=50)
        with pytest.raises(RequestDataTooBig):
            read_body(chunked_request(stream))
        assert stream.delivered == 101

    def test_an_endless_chunked_body_is_read_one_byte_past_the_limit_and_no_further(self):
        from django.core.exceptions import RequestDataTooBig

        from accounts.proxy import read_body

        stream = PiecewiseStream(b"x" * 1_000_000, piece=64 * 1024)
        with pytest.raises(RequestDataTooBig):
            read_body(chunked_request(stream))
        assert stream.delivered == 101

    def test_an_endless_chunked_body_in_small_pieces_is_read_one_byte_past_the_limit(self):
        """Each read asks only for what is left up to the limit, however much came before."""
        from django.core.exceptions import RequestDataTooBig

        from accounts.proxy import read_body

        stream = PiecewiseStream(b"x" * 1_000_000, piece=30)
        with pytest.raises(RequestDataTooBig):
            read_body(chunked_request(stream))
        assert stream.delivered == 101

    def test_a_content_length_at_the_limit_is_read(self):
        from django.test import RequestFactory

        from accounts.proxy import read_body

        request = RequestFactory().post("/api/x", data=b"y" * 100, content_type="text/plain")
        assert read_body(request) == b"y" * 100

    def test_a_body_method_sent_without_any_body_goes_out_empty(self):
        """A script's DELETE (or bodiless POST) has neither Content-Length nor chunks."""
        from django.test import RequestFactory

        from accounts.proxy import read_body

        request = RequestFactory().delete("/api/users/notes/1")
        request.META.pop("CONTENT_LENGTH", None)
        assert read_body(request) == b""

    @pytest.mark.parametrize(("django_limit", "expected"), [(None, 100), (50, 50), (1000, 100)])
    def test_the_lower_of_the_two_limits_holds(self, settings, django_limit, expected):
        from accounts.proxy import body_limit

        settings.DATA_UPLOAD_MAX_MEMORY_SIZE = django_limit
        assert body_limit() == expected


class TestRelayedAnswer:
    """`relayed` on its own: what the browser gets for a backend answer, whatever the
    middleware adds later."""

    def answer(self, content_type: str | None):
        from requests.structures import CaseInsensitiveDict

        from accounts.client import BackendAnswer

        headers = CaseInsensitiveDict({"Content-Type": content_type} if content_type else {})
        return BackendAnswer(status=200, content=b"{}", headers=headers, cookies=[])

    def test_every_answer_is_sandboxed_and_never_sniffed(self):
        from accounts.proxy import relayed

        response = relayed(self.answer("application/json"))
        assert response["Content-Security-Policy"] == SANDBOX_POLICY
        assert response["X-Content-Type-Options"] == "nosniff"
        assert not response.has_header("Content-Disposition")

    def test_json_with_several_parameters_is_still_json(self):
        from accounts.proxy import relayed

        response = relayed(self.answer("Application/JSON; charset=utf-8; profile=x"))
        assert not response.has_header("Content-Disposition")

    def test_anything_else_is_an_attachment_and_untyped_stays_untyped(self):
        from accounts.proxy import relayed

        assert relayed(self.answer("text/html; charset=utf-8"))["Content-Disposition"] == (
            "attachment"
        )
        untyped = relayed(self.answer(None))
        assert untyped["Content-Type"] == "application/octet-stream"
        assert untyped["Content-Disposition"] == "attachment"


class TestWhatGoesOut:
    def test_a_dot_segment_with_several_parameters_is_refused(self):
        assert allowed_path("users/..;x;y/auth/refresh") is None
        assert allowed_path("users/.;x;y") is None

    def test_a_request_without_a_query_string_sends_none(self):
        from django.test import RequestFactory

        from accounts.proxy import forwarded_query

        request = RequestFactory().get("/api/users/me")
        request.META.pop("QUERY_STRING", None)
        assert forwarded_query(request) == ""

    def test_a_query_string_already_decoded_to_text_goes_out_as_utf8(self):
        """Not every server hands the bytes over as latin-1 (PEP 3333); text is sent as UTF-8."""
        from django.test import RequestFactory

        from accounts.proxy import forwarded_query

        request = RequestFactory().get("/api/users/me")
        request.META["QUERY_STRING"] = "q=€"
        assert forwarded_query(request) == "q=%E2%82%AC"
