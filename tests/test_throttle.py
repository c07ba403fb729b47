"""Sign-in throttling (accounts/throttle.py): per (email, client) pair, per client
address, and a cap on one email's attempts in flight; counted before the password
is checked. In-process against a stubbed backend, then over real HTTP: gunicorn in
front of the reference API, on SQLite and on PostgreSQL + Redis."""

import contextlib
import http.client
import logging
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import requests
from django.contrib.auth import SESSION_KEY
from django.db import DatabaseError
from django.test import Client
from django.urls import resolve

import accounts.forwarded
from accounts import throttle
from accounts.models import LoginCounter
from accounts.pacing import AtMostEvery
from authapi.demo import DEMO_USERS
from tests import fakes
from tests.fakes import calls_to
from tests.servers import (
    postgres_available,
    redis_available,
    running_app,
    running_authapi,
    throwaway_database,
)
from tests.services import require

LOGIN = "/accounts/login/"
ADMIN = "admin@example.com"


@pytest.fixture
def api(backend):
    """The backend: "right" is admin's password, anything else a 401."""

    def login(request):
        if b'"password": "right"' in request.body:
            return (201, fakes.token_headers(fakes.access_jwt(), "refresh-1"), "{}")
        return (401, [], '{"message": "Invalid credentials"}')

    backend.add_callback("POST", f"{fakes.BASE}/auth/login", callback=login)
    fakes.stub_me(backend, "admin")
    return backend


def wrong(client, email=ADMIN, **extra):
    return client.post(LOGIN, {"email": email, "password": "nope"}, **extra)


def right(client, email=ADMIN, **extra):
    return client.post(LOGIN, {"email": email, "password": "right"}, **extra)


def counts() -> dict[str, int]:
    """Failures and attempts in flight by kind: {"pair": n, "client": n, "inflight": n}.

    Sums over keys; `busy-…` counters (attempts being checked) must be back
    at 0 whenever no attempt is in flight, and `email` counts failures.
    """
    totals = {"pair": 0, "client": 0, "inflight": 0}
    for key, count in LoginCounter.objects.values_list("key", "count"):
        kind = key.split(":", 1)[0]
        if kind.startswith("busy-"):
            assert count == 0, f"{kind} still counts {count} attempts in flight"
        elif kind in totals:
            totals[kind] += count
    return totals


def logins(backend) -> int:
    return len(calls_to(backend, "/auth/login"))


class TestLockout:
    def test_the_pair_locks_out_only_itself(self, client, db, api):
        for _ in range(5):  # AUTH_LOGIN_MAX_FAILURES
            response = wrong(client)
            assert response.status_code == 200
            assert "Invalid email or password" in response.content.decode()

        assert wrong(client).status_code == 429
        assert right(client).status_code == 429, "the pair is locked, right password or not"
        assert logins(api) == 5, "the refused attempts never reached the backend"
        # The same email from elsewhere, and another email from here, still try.
        assert right(Client(REMOTE_ADDR="198.51.100.7")).status_code == 302
        assert wrong(client, "evaluator@example.com").status_code == 200
        assert logins(api) == 7

    def test_the_429_page_says_when_to_retry(self, client, db, api, settings):
        settings.AUTH_LOGIN_MAX_FAILURES = 2
        wrong(client)
        wrong(client)

        response = wrong(client)

        assert response.status_code == 429
        seconds = int(response["Retry-After"])
        assert 295 <= seconds <= 300  # AUTH_LOGIN_THROTTLE_WINDOW from the first failure
        body = response.content.decode()
        assert "Too many sign-in attempts" in body
        # Minutes and the time to come back, never "295 seconds" (the clock may turn).
        assert re.search(r"Please wait about 5 minutes \(until \d\d:\d\d UTC\) before", body)
        assert 'value="admin@example.com"' in body, "the form keeps the email"
        assert SESSION_KEY not in client.session

    def test_the_cool_off_runs_from_the_first_failure(self, client, db, api, settings):
        settings.AUTH_LOGIN_MAX_FAILURES = 2
        wrong(client)
        wrong(client)
        pair = LoginCounter.objects.get(key__startswith="pair:")
        # 258 seconds later: the window opened by the first failure has 42 left,
        # and the refused attempts do not push it further out.
        LoginCounter.objects.filter(pk=pair.pk).update(expires_at=time.time() + 41.5)
        assert wrong(client)["Retry-After"] == "42"
        assert wrong(client)["Retry-After"] == "42"
        # Once it has passed, the failures are forgotten: a new window, counting 1.
        LoginCounter.objects.filter(pk=pair.pk).update(expires_at=time.time() - 1)
        assert wrong(client).status_code == 200
        assert LoginCounter.objects.get(pk=pair.pk).count == 1
        assert logins(api) == 3

    def test_the_client_address_is_limited_whatever_the_email(self, client, db, api, settings):
        settings.AUTH_LOGIN_MAX_FAILURES_PER_IP = 4
        for n in range(4):
            assert wrong(client, f"guess{n}@example.com").status_code == 200

        response = right(client)

        assert response.status_code == 429
        assert 295 <= int(response["Retry-After"]) <= 300
        assert logins(api) == 4
        assert right(Client(REMOTE_ADDR="198.51.100.20")).status_code == 302

    def test_ipv6_addresses_count_by_their_64_network(self, db, api, settings):
        settings.AUTH_LOGIN_MAX_FAILURES_PER_IP = 2
        wrong(Client(REMOTE_ADDR="2001:db8:1:2::a"), "a@example.com")
        wrong(Client(REMOTE_ADDR="2001:db8:1:2:ffff::b"), "b@example.com")
        assert wrong(Client(REMOTE_ADDR="2001:db8:1:2::c"), "c@example.com").status_code == 429
        assert wrong(Client(REMOTE_ADDR="2001:db8:1:3::c"), "c@example.com").status_code == 200

    def test_the_table_names_no_email_and_no_address(self, client, db, api):
        wrong(client)
        keys = sorted(LoginCounter.objects.values_list("key", flat=True))
        assert [key.split(":")[0] for key in keys] == [
            "busy-client",
            "busy-pair",
            "client",
            "email",
            "pair",
        ]
        assert all(re.fullmatch(r"[a-z-]+:[0-9a-f]{64}", key) for key in keys), keys


class TestSettling:
    def test_a_success_clears_the_pair_and_is_no_failure_of_the_address(
        self, client, db, api, settings
    ):
        settings.AUTH_LOGIN_MAX_FAILURES_PER_IP = 6
        for _ in range(4):
            wrong(client)
        assert counts() == {"pair": 4, "client": 4, "inflight": 0}

        assert right(client).status_code == 302

        assert counts() == {"pair": 0, "client": 4, "inflight": 0}
        client.post("/accounts/logout/")
        # The pair starts afresh; the address keeps its four failures (limit 6).
        assert [wrong(client).status_code for _ in range(3)] == [200, 200, 429]
        assert counts()["client"] == 6

    @pytest.mark.parametrize(
        "answer",
        [
            {"status": 503},
            {"status": 429, "headers": {"Retry-After": "7"}},
            {"body": fakes.connection_refused()},
        ],
        ids=["503", "throttled", "refused"],
    )
    def test_backend_trouble_is_no_failure(self, client, db, backend, answer):
        backend.post(f"{fakes.BASE}/auth/login", **answer)
        answers = [wrong(client).status_code for _ in range(7)]

        assert set(answers) == {429 if answer.get("status") == 429 else 503}
        assert logins(backend) == 7, "the app never throttled what the backend did not refuse"
        assert counts() == {"pair": 0, "client": 0, "inflight": 0}

    def test_a_malformed_form_is_no_failure(self, client, db, api):
        for form in ({"email": ADMIN}, {"email": "not an email", "password": "x"}, {}):
            assert client.post(LOGIN, form).status_code == 200
        assert logins(api) == 0
        assert counts() == {"pair": 0, "client": 0, "inflight": 0}

    def test_an_account_without_access_counts_as_a_failure(self, client, db, backend):
        fakes.stub_login(backend)
        fakes.stub_me(backend, "viewer")
        fakes.stub_logout(backend)
        response = right(client, "viewer@example.com")
        assert "This account does not have access" in response.content.decode()
        assert counts() == {"pair": 1, "client": 1, "inflight": 0}

    def test_the_database_down_is_a_database_error_before_the_backend(
        self, client, db, api, monkeypatch
    ):
        monkeypatch.setattr(LoginCounter._meta, "db_table", "accounts_no_such_table")
        try:
            response = right(client)
        except DatabaseError:
            response = None  # for the outage handler (accounts/outage.py) to answer
        assert response is None or response.status_code == 503
        assert logins(api) == 0
        assert SESSION_KEY not in client.session

    def test_a_counter_that_cannot_be_settled_ages_out_quietly(
        self, client, db, api, monkeypatch, caplog
    ):
        def broken(counts):
            raise DatabaseError("the database went away")

        monkeypatch.setattr(throttle, "_unbump", broken)
        assert right(client).status_code == 302
        assert "Sign-in throttle could not settle an attempt" in caplog.text

    def test_sign_in_never_runs_in_a_request_wide_transaction(self):
        """With ATOMIC_REQUESTS the counts would stay invisible, their rows locked, until
        the response: attempts sent together would all pass, or queue one by one."""
        assert "default" in resolve(LOGIN).func._non_atomic_requests

    def test_purge_deletes_only_expired_counters(self, db):
        LoginCounter.objects.create(key="old", count=3, expires_at=time.time() - 1)
        LoginCounter.objects.create(key="new", count=3, expires_at=time.time() + 60)
        assert throttle.purge_expired() == 1
        assert list(LoginCounter.objects.values_list("key", flat=True)) == ["new"]


def sleeps_that(monkeypatch, *, at: int, act) -> list[float]:
    """Record this thread's throttle waits; at wait number `at`, `act()` (another attempt settles).

    time.sleep is patched for every thread: a keeper thread left by an earlier
    test sleeps too, and is let through uncounted.
    """
    sleep, me, waits = time.sleep, threading.current_thread(), []

    def waiting(seconds):
        if threading.current_thread() is me:
            waits.append(seconds)
            if len(waits) == at:
                act()
        sleep(seconds)

    monkeypatch.setattr(throttle.time, "sleep", waiting)
    return waits


def a_pair_with_attempts_in_flight(in_flight: int, failures: int = 0) -> throttle.SignInAttempt:
    """Counters as they stand while `in_flight` attempts of the test client are being checked."""
    attempt = throttle.SignInAttempt(Client().request().wsgi_request, email=ADMIN)
    expires = time.time() + 300
    for key, count in (
        (attempt.pair_key, failures + in_flight),
        (f"busy-{attempt.pair_key}", in_flight),
    ):
        LoginCounter.objects.create(key=key, count=count, expires_at=expires)
    return attempt


class TestAttemptsInFlight:
    """Over the limit only because attempts of the same client are still being checked."""

    def test_an_attempt_waits_for_them_and_goes_on_when_they_succeed(
        self, client, db, api, monkeypatch
    ):
        attempt = a_pair_with_attempts_in_flight(5)  # AUTH_LOGIN_MAX_FAILURES
        waits = sleeps_that(
            monkeypatch,
            at=2,
            act=lambda: LoginCounter.objects.filter(key__endswith=attempt.pair_key).delete(),
        )

        assert right(client).status_code == 302
        assert len(waits) == 2
        assert logins(api) == 1

    def test_an_attempt_is_refused_for_a_second_when_they_do_not_settle(
        self, client, db, api, monkeypatch
    ):
        monkeypatch.setattr(throttle, "SETTLE_WAIT", 0.3)
        a_pair_with_attempts_in_flight(5)

        response = right(client)

        assert (response.status_code, response["Retry-After"]) == (429, "1")
        assert logins(api) == 0

    def test_failures_alone_at_the_limit_are_a_lockout_at_once(self, client, db, api):
        a_pair_with_attempts_in_flight(1, failures=5)
        started = time.monotonic()

        response = right(client)

        assert time.monotonic() - started < throttle.SETTLE_WAIT, "no wait for a lockout"
        assert response.status_code == 429
        assert int(response["Retry-After"]) > 1
        assert logins(api) == 0


class TestEmailConcurrency:
    def fill_slots(self, email=ADMIN, count=2, failures=5):
        """Take `count` slots of an email that failed `failures` times (from anywhere)."""
        attempt = throttle.SignInAttempt(Client().request().wsgi_request, email=email)
        expires = time.time() + 60
        LoginCounter.objects.create(key=attempt.slot_key, count=count, expires_at=expires)
        LoginCounter.objects.create(key=attempt.email_key, count=failures, expires_at=expires)
        return attempt.slot_key

    def test_an_email_nobody_guesses_is_never_capped(self, client, db, api, monkeypatch):
        monkeypatch.setattr(throttle, "SLOT_WAIT", 0.1)
        key = self.fill_slots(failures=4)

        assert right(client).status_code == 302
        assert LoginCounter.objects.get(key=key).count == 2, "no slot taken"

    def test_failures_from_anywhere_put_the_email_under_the_cap(self, db, api, monkeypatch):
        monkeypatch.setattr(throttle, "SLOT_WAIT", 0.1)
        for n in range(5):  # AUTH_LOGIN_MAX_FAILURES, one from each of five addresses
            wrong(Client(REMOTE_ADDR=f"198.51.100.{n + 1}"))
        key = throttle.SignInAttempt(Client().request().wsgi_request, email=ADMIN).slot_key
        LoginCounter.objects.update_or_create(
            key=key, defaults={"count": 2, "expires_at": time.time() + 60}
        )

        assert right(Client(REMOTE_ADDR="198.51.100.9")).status_code == 429

    def test_an_attempt_over_the_cap_waits_then_gets_a_429(self, client, db, api, monkeypatch):
        monkeypatch.setattr(throttle, "SLOT_WAIT", 0.3)
        key = self.fill_slots()
        started = time.monotonic()

        response = right(client)

        assert 0.25 <= time.monotonic() - started < 2
        assert (response.status_code, response["Retry-After"]) == (429, "1")
        assert "Please wait 1 second before you try again." in response.content.decode()
        assert logins(api) == 0
        assert counts() == {"pair": 0, "client": 0, "inflight": 2}, "only the holders' slots"
        assert LoginCounter.objects.get(key=key).count == 2

    def test_a_slot_freed_during_the_wait_is_taken(self, client, db, api, monkeypatch):
        key = self.fill_slots()
        waits = sleeps_that(
            monkeypatch, at=3, act=lambda: LoginCounter.objects.filter(key=key).update(count=1)
        )

        assert right(client).status_code == 302
        assert len(waits) == 3
        assert LoginCounter.objects.get(key=key).count == 1, "its own slot given back"

    def test_an_expired_slot_is_free_again(self, client, db, api):
        """A worker killed while holding a slot blocks it for SLOT_LIFETIME at most."""
        key = self.fill_slots()
        LoginCounter.objects.filter(key=key).update(expires_at=time.time() - 1)
        assert right(client).status_code == 302

    @pytest.mark.parametrize("password", ["right", "nope"])
    def test_every_attempt_gives_its_slot_back(self, client, db, api, password):
        client.post(LOGIN, {"email": ADMIN, "password": password})
        assert counts()["inflight"] == 0

    def test_the_cap_is_per_email(self, client, db, api, monkeypatch):
        monkeypatch.setattr(throttle, "SLOT_WAIT", 0.1)
        self.fill_slots("someone.else@example.com")
        assert right(client).status_code == 302


class TestHostileInput:
    @pytest.mark.parametrize("email", ["é€@example.com", "nul\x00@example.com", "a" * 5000])
    def test_a_malformed_email_never_reaches_the_backend_nor_counts(self, client, db, api, email):
        for _ in range(7):
            response = client.post(LOGIN, {"email": email, "password": "nope"})
            assert response.status_code == 200
        assert logins(api) == 0
        assert counts() == {"pair": 0, "client": 0, "inflight": 0}

    @pytest.mark.parametrize("email", ["user@exämple.com", "  ADMIN@example.com  "])
    def test_an_unusual_but_valid_email_is_counted(self, client, db, api, email):
        for _ in range(5):  # AUTH_LOGIN_MAX_FAILURES
            assert client.post(LOGIN, {"email": email, "password": "nope"}).status_code == 200
        response = client.post(LOGIN, {"email": email, "password": "nope"})
        assert response.status_code == 429
        assert logins(api) == 5

    def test_a_forged_forwarded_for_is_no_address(self, client, db, api, settings):
        settings.AUTH_TRUSTED_PROXY_COUNT = 1
        settings.AUTH_TRUSTED_PROXIES = ["127.0.0.1"]  # the test client's REMOTE_ADDR
        for n in range(5):
            wrong(client, HTTP_X_FORWARDED_FOR=f"not-an-ip-{n}, ../é")
        assert wrong(client, HTTP_X_FORWARDED_FOR="garbage").status_code == 429, (
            "an unparsable hop falls back to REMOTE_ADDR, one pair"
        )


class TestClientAddress:
    def test_forwarded_for_counts_only_behind_trusted_proxies(self, client, db, api, settings):
        settings.AUTH_LOGIN_MAX_FAILURES_PER_IP = 2
        # No trusted proxy: the header is the client's invention and changes nothing.
        for n in range(2):
            wrong(client, f"g{n}@example.com", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")
        assert wrong(client, "x@example.com", HTTP_X_FORWARDED_FOR="192.0.2.9").status_code == 429
        # One trusted proxy: its view of the client counts, per client.
        settings.AUTH_TRUSTED_PROXY_COUNT = 1
        settings.AUTH_TRUSTED_PROXIES = ["127.0.0.1"]
        response = wrong(client, "x@example.com", HTTP_X_FORWARDED_FOR="203.0.113.1, 192.0.2.50")
        assert response.status_code == 200
        assert calls_to(api, "/auth/login")[-1].request.headers["X-Forwarded-For"] == "192.0.2.50"

    def test_forwarded_for_without_a_trusted_proxy_logs_an_error_once_a_minute(
        self, rf, settings, monkeypatch, caplog
    ):
        once = AtMostEvery(60)
        monkeypatch.setattr(accounts.forwarded, "_no_proxy_count_warning", once)
        forwarded = rf.post(LOGIN, HTTP_X_FORWARDED_FOR="192.0.2.1")
        caplog.set_level(logging.ERROR, logger="accounts.forwarded")

        for _ in range(3):
            assert throttle.client_ip(forwarded) == "127.0.0.1"
        throttle.client_ip(rf.post(LOGIN))
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert errors[0].startswith(
            "X-Forwarded-For arrives but AUTH_TRUSTED_PROXY_COUNT=0: every client behind the "
            "proxy shares one throttle; set it to the number of proxies"
        )

        once._last -= 61  # a minute later
        throttle.client_ip(forwarded)
        settings.AUTH_TRUSTED_PROXY_COUNT = 1
        settings.AUTH_TRUSTED_PROXIES = ["127.0.0.1"]
        once._last -= 61
        assert throttle.client_ip(forwarded) == "192.0.2.1"
        assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2


# --- Over real HTTP: gunicorn (2 workers × 4 threads) in front of the reference API ---


class SlowLoginProxy:
    """An HTTP proxy in front of the API that holds each sign-in `delay` s and counts them.

    `sign_ins` counts the sign-in calls; `most_in_flight` is the most the API had at once.
    """

    def __init__(self, upstream: str, *, delay: float):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.delay = delay
        self.sign_ins = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        sign_in = handler.command == "POST" and handler.path.startswith("/auth/login")
        if sign_in:
            with self.lock:
                self.sign_ins += 1
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
            time.sleep(self.delay)
        try:
            upstream = http.client.HTTPConnection(*self.upstream, timeout=10)
            headers = {k: v for k, v in handler.headers.items() if k.lower() != "connection"}
            upstream.request(handler.command, handler.path, body=body, headers=headers)
            answer = upstream.getresponse()
            content = answer.read()
            upstream.close()
        finally:
            if sign_in:
                with self.lock:
                    self.in_flight -= 1
        handler.send_response(answer.status)
        for name, value in answer.getheaders():  # repeated Set-Cookie kept one by one
            if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        handler.wfile.write(content)

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                proxy._forward(self)

            do_POST = do_GET

            def log_message(self, *args):
                pass

        return Handler


class Visitor:
    """A browser at `address`, behind the one trusted proxy, with the sign-in form loaded."""

    def __init__(self, base_url: str, address: str):
        self.url = f"{base_url}{LOGIN}"
        self.session = requests.Session()
        self.session.headers["X-Forwarded-For"] = address
        form = self.session.get(self.url, timeout=10)
        self.csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)[1]

    def sign_in(self, email: str, password: str) -> requests.Response:
        return self.session.post(
            self.url,
            data={"email": email, "password": password, "csrfmiddlewaretoken": self.csrf},
            headers={"Referer": self.url},
            allow_redirects=False,
            timeout=30,
        )


def attempt(base_url: str, email: str, password: str, *, address: str) -> requests.Response:
    return Visitor(base_url, address).sign_in(email, password)


def all_at_once(calls: list) -> list[requests.Response]:
    """Make every call at the same moment, one thread each; return the answers in order."""
    barrier = threading.Barrier(len(calls))
    answers: list = [None] * len(calls)

    def one(index: int) -> None:
        barrier.wait()
        answers[index] = calls[index]()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def reached(api) -> int:
    """Sign-in calls the API has answered so far, whatever the answer."""
    stats = api.stats()
    return stats["login"] + stats["login_failed"] + stats["login_throttled"]


@pytest.fixture(scope="module")
def authapi(tmp_path_factory):
    """The reference API, its own throttle raised out of the way so the app's shows.

    At its defaults (5 failures per account and client, 20 per client) the
    API would itself answer 429 to the guesses past them: what the app
    must do would then be the API's doing.
    """
    with running_authapi(
        tmp_path_factory.mktemp("throttle-api"),
        AUTHAPI_LOGIN_MAX_FAILURES_PER_ACCOUNT="1000",
        AUTHAPI_LOGIN_MAX_FAILURES_PER_IP="1000",
    ) as server:
        yield server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def storage(request):
    """Environment for app servers: SQLite and its database cache, or PostgreSQL + Redis."""
    if request.param == "sqlite":
        yield {}
        return
    require(postgres_available(), "PostgreSQL is not running on 127.0.0.1:5432")
    require(redis_available(), "Redis is not running on 127.0.0.1:6379")
    with throwaway_database("tokenauth_throttle", migrated=True) as url:
        yield {
            "DATABASE_URL": url,
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "CACHE_KEY_PREFIX": f"throttle-{uuid.uuid4().hex[:8]}",
        }


@contextlib.contextmanager
def app_server(workdir, storage, *, api_url: str, name: str):
    with running_app(
        workdir,
        api_url=api_url,
        workers=2,
        name=name,
        database=name,
        AUTH_TRUSTED_PROXY_COUNT="1",
        AUTH_TRUSTED_PROXIES="127.0.0.1",
        **storage,
    ) as server:
        yield server


@pytest.fixture(scope="module")
def app(storage, authapi, tmp_path_factory):
    """The app under gunicorn behind one trusted proxy at 127.0.0.1 (AUTH_TRUSTED_PROXY_COUNT=1)."""
    with app_server(
        tmp_path_factory.mktemp("throttle-app"), storage, api_url=authapi.url, name="app"
    ) as server:
        yield server


def test_thirty_wrong_passwords_at_once_let_at_most_the_limit_reach_the_backend(app, authapi):
    email, address = DEMO_USERS[0].email, "203.0.113.30"
    visitors = [Visitor(app.url, address) for _ in range(30)]
    before = reached(authapi)

    answers = all_at_once([lambda v=v: v.sign_in(email, "guess") for v in visitors])

    through = reached(authapi) - before
    statuses = [answer.status_code for answer in answers]
    assert sorted(set(statuses)) <= [200, 429], statuses
    assert 1 <= through <= 5, f"{through} of 30 reached the API"  # AUTH_LOGIN_MAX_FAILURES
    assert statuses.count(200) == through, statuses
    assert statuses.count(429) == 30 - through, statuses
    for answer in answers:
        if answer.status_code == 429:
            assert 1 <= int(answer.headers["Retry-After"]) <= 300
    # The count was exact: the pair has the limit of failures and not one more.
    follow_ups = []
    while not follow_ups or follow_ups[-1].status_code == 200:
        follow_ups.append(attempt(app.url, email, "guess", address=address))
        assert len(follow_ups) <= 6
    assert reached(authapi) - before == 5
    assert int(follow_ups[-1].headers["Retry-After"]) > 1, "locked out, not merely busy"


def test_failures_from_other_addresses_leave_the_victims_right_password_working(app, authapi):
    # An account no other test here signs in to: ten failures put its email under the
    # cap on attempts in flight for the throttle window, which the office signing in
    # together below would otherwise meet, or not, by test order.
    victim = DEMO_USERS[2]
    authapi.apiuser("roles", victim.email, "evaluator")
    for n in range(1, 6):
        response = attempt(app.url, victim.email, f"guess-{n}", address=f"198.51.100.{n}")
        assert response.status_code == 200
        assert "Invalid email or password" in response.text
    one_attacker = [
        attempt(app.url, victim.email, "guess", address="198.51.100.1") for _ in range(5)
    ]
    assert [r.status_code for r in one_attacker] == [200] * 4 + [429], "that pair is locked"

    visitor = Visitor(app.url, "198.51.100.6")
    response = visitor.sign_in(victim.email, victim.password)

    assert response.status_code == 302
    assert response.headers["Location"] == "/dashboard/"
    assert visitor.session.cookies.get("refresh_token")
    page = visitor.session.get(f"{app.url}/dashboard/", allow_redirects=False, timeout=10)
    assert page.status_code == 200


def test_many_right_passwords_at_once_from_one_address_all_sign_in(app, authapi):
    """An office behind one address signing in to one shared account together."""
    user = DEMO_USERS[1]
    visitors = [Visitor(app.url, "203.0.113.77") for _ in range(12)]

    answers = all_at_once([lambda v=v: v.sign_in(user.email, user.password) for v in visitors])

    assert [answer.status_code for answer in answers] == [302] * 12


def test_many_addresses_guessing_one_email_get_two_attempts_in_flight(
    storage, authapi, tmp_path_factory
):
    admin = DEMO_USERS[0]
    with (
        SlowLoginProxy(authapi.url, delay=0.5) as proxy,
        app_server(
            tmp_path_factory.mktemp("throttle-slow"), storage, api_url=proxy.url, name="slow"
        ) as app,
    ):
        # Five failures from five places: the email is being guessed (AUTH_LOGIN_MAX_FAILURES).
        for n in range(1, 6):
            assert attempt(app.url, admin.email, "guess", address=f"192.0.2.20{n}").ok
        before = proxy.sign_ins
        visitors = [Visitor(app.url, f"192.0.2.{n}") for n in range(1, 13)]

        answers = all_at_once([lambda v=v: v.sign_in(admin.email, "guess") for v in visitors])

        assert proxy.most_in_flight == 2  # AUTH_LOGIN_EMAIL_CONCURRENCY
        statuses = [answer.status_code for answer in answers]
        assert statuses.count(200) == proxy.sign_ins - before, statuses
        # Those that found no slot within a second (how many depends on timing):
        assert statuses.count(429) == 12 - (proxy.sign_ins - before), statuses
        for answer in answers:
            if answer.status_code == 429:
                assert answer.headers["Retry-After"] == "1"
                assert "Please wait 1 second before you try again." in answer.text
        # Nobody is locked out: the owner, from an address with no failures, signs in.
        response = attempt(app.url, admin.email, admin.password, address="192.0.2.100")
        assert response.status_code == 302


# --- waits measured on a stopped clock ----------------------------------------------


class StoppedClock:
    """The throttle's `time`: the wall clock as it is, a monotonic clock only sleeps move."""

    def __init__(self):
        self.now, self.slept = 1000.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def time(self) -> float:
        return time.time()


@pytest.fixture
def stopped_clock(monkeypatch):
    clock = StoppedClock()
    monkeypatch.setattr(throttle, "time", clock)
    return clock


def test_an_attempt_over_the_emails_cap_waits_its_slot_wait_and_no_longer(
    client, db, api, stopped_clock
):
    TestEmailConcurrency().fill_slots()
    response = right(client)
    assert (response.status_code, response["Retry-After"]) == (429, "1")
    waited = sum(stopped_clock.slept)
    assert throttle.SLOT_WAIT - throttle.SLOT_POLL <= waited <= throttle.SLOT_WAIT + 1e-9
    assert logins(api) == 0


def test_an_attempt_behind_unsettled_ones_waits_its_settle_wait_and_no_longer(
    client, db, api, stopped_clock
):
    a_pair_with_attempts_in_flight(5)
    response = right(client)
    assert (response.status_code, response["Retry-After"]) == (429, "1")
    waited = sum(stopped_clock.slept)
    assert throttle.SETTLE_WAIT - throttle.SLOT_POLL <= waited <= throttle.SETTLE_WAIT + 1e-9
    assert logins(api) == 0


@pytest.mark.parametrize(("left", "said"), [(0.2, 1), (1.0, 1), (1.2, 2), (299.5, 300)])
def test_the_wait_told_is_whole_seconds_rounded_up_and_never_zero(left, said):
    assert throttle.Count("pair:x", 6, expires_at=1000.0 + left).seconds_left(1000.0) == said


# --- settling, and the email's pressure, in detail ------------------------------------


def started_attempt(email=ADMIN) -> throttle.SignInAttempt:
    attempt = throttle.SignInAttempt(Client().request().wsgi_request, email=email)
    assert attempt.start() is None
    return attempt


def test_an_attempt_settled_after_its_window_ended_leaves_the_new_window_alone(db):
    attempt = started_attempt()
    # The window ends and another attempt opens a new one before this one settles.
    LoginCounter.objects.filter(key=attempt.pair_key).update(count=1, expires_at=time.time() + 900)
    attempt.finish()  # nothing marked: no failure, so it would take its count back
    assert LoginCounter.objects.get(key=attempt.pair_key).count == 1


def test_a_count_never_goes_below_zero(db):
    attempt = started_attempt()
    LoginCounter.objects.filter(key=attempt.client_key).update(count=0)
    attempt.finish()
    assert LoginCounter.objects.get(key=attempt.client_key).count == 0


def test_failures_of_an_email_from_a_window_that_ended_put_it_under_no_cap(db):
    attempt = throttle.SignInAttempt(Client().request().wsgi_request, email=ADMIN)
    LoginCounter.objects.create(key=attempt.email_key, count=50, expires_at=time.time() - 1)
    started_attempt().finish()
    assert not LoginCounter.objects.filter(key=attempt.slot_key).exists(), "no slot taken"


def test_an_email_that_never_failed_is_under_no_cap_even_at_one_failure_allowed(db, settings):
    settings.AUTH_LOGIN_MAX_FAILURES = 1
    attempt = started_attempt()
    attempt.finish()
    assert not LoginCounter.objects.filter(key=attempt.slot_key).exists(), "no slot taken"


def test_a_settling_the_database_refuses_is_a_warning_with_its_cause(
    client, db, api, monkeypatch, caplog
):
    def broken(counts):
        raise DatabaseError("the database went away")

    monkeypatch.setattr(throttle, "_unbump", broken)
    assert right(client).status_code == 302
    (record,) = [r for r in caplog.records if r.name == "accounts.throttle"]
    assert (record.levelname, record.getMessage()) == (
        "WARNING",
        "Sign-in throttle could not settle an attempt; its counts age out",
    )
    assert record.exc_info[1].args == ("the database went away",)


def test_each_refusal_says_why_in_the_log(client, db, api, stopped_clock, caplog):
    caplog.set_level(logging.INFO, logger="accounts.throttle")
    a_pair_with_attempts_in_flight(1, failures=5)
    right(client)
    LoginCounter.objects.all().delete()
    a_pair_with_attempts_in_flight(5)
    right(client)
    LoginCounter.objects.all().delete()
    TestEmailConcurrency().fill_slots()
    right(client)
    assert [r.getMessage() for r in caplog.records if r.name == "accounts.throttle"] == [
        "Sign-in refused by the throttle: too many failures",
        "Sign-in refused by the throttle: this client's attempts in flight",
        "Sign-in refused by the throttle: the email's attempts are all in flight",
    ]


def test_a_lockout_with_less_than_a_second_left_is_refused_without_waiting(
    client, db, api, stopped_clock
):
    attempt = a_pair_with_attempts_in_flight(0, failures=5)
    LoginCounter.objects.filter(key=attempt.pair_key).update(expires_at=time.time() + 0.5)
    response = right(client)
    assert (response.status_code, response["Retry-After"]) == (429, "1")
    assert stopped_clock.slept == []


def an_attempt_whose_slot_cannot_be_taken(monkeypatch) -> throttle.SignInAttempt:
    """An attempt with five failures counted, whose slot's write raises DatabaseError."""
    attempt = throttle.SignInAttempt(Client().request().wsgi_request, email=ADMIN)
    LoginCounter.objects.create(key=attempt.email_key, count=5, expires_at=time.time() + 60)
    real_bump = throttle._bump

    def bump(lifetimes):
        if attempt.slot_key in lifetimes:
            raise DatabaseError("the database went away")
        return real_bump(lifetimes)

    monkeypatch.setattr(throttle, "_bump", bump)
    return attempt


def test_counters_lost_while_taking_a_slot_are_a_database_error(db, monkeypatch):
    attempt = an_attempt_whose_slot_cannot_be_taken(monkeypatch)

    def unbump(counts):
        raise DatabaseError("still away")

    monkeypatch.setattr(throttle, "_unbump", unbump)
    with pytest.raises(DatabaseError, match="the database went away"):
        attempt.start()


def test_a_slot_that_cannot_be_taken_gives_the_attempts_counts_back(db, monkeypatch):
    attempt = an_attempt_whose_slot_cannot_be_taken(monkeypatch)
    with pytest.raises(DatabaseError):
        attempt.start()
    assert LoginCounter.objects.get(key=attempt.pair_key).count == 0
    assert LoginCounter.objects.get(key=attempt.client_key).count == 0


def test_an_ipv4_client_seen_through_ipv6_counts_as_itself(settings):
    def client_key(address: str) -> str:
        request = Client(REMOTE_ADDR=address).request().wsgi_request
        return throttle.SignInAttempt(request, email=ADMIN).client_key

    assert client_key("::ffff:198.51.100.7") == client_key("198.51.100.7")
    assert client_key("::ffff:198.51.100.8") != client_key("198.51.100.7")


def test_an_attempt_waiting_for_a_slot_only_looks_until_one_is_free(client, db, api, stopped_clock):
    """The holders' counter is read while the attempt waits, not written at every look:
    a crowd guessing one email would otherwise keep its row locked the whole second."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    TestEmailConcurrency().fill_slots()
    table = LoginCounter._meta.db_table
    with CaptureQueriesContext(connection) as queries:
        response = right(client)
    assert response.status_code == 429
    assert len(stopped_clock.slept) > 10
    upserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    upserts = [sql for sql in upserts if table in sql]
    assert len(upserts) == 2, "one for the attempt's own counts, one to try the slot"


def test_polls_that_divide_the_slot_wait_exactly_wait_all_of_it(
    client, db, api, stopped_clock, monkeypatch
):
    """The last look is at the deadline itself, not one poll before it."""
    monkeypatch.setattr(throttle, "SLOT_WAIT", 1.0)
    monkeypatch.setattr(throttle, "SLOT_POLL", 0.125)  # exact in binary: no rounding at the end
    TestEmailConcurrency().fill_slots()
    assert right(client).status_code == 429
    assert stopped_clock.slept == [0.125] * 8


def test_polls_that_divide_the_settle_wait_exactly_wait_all_of_it(
    client, db, api, stopped_clock, monkeypatch
):
    monkeypatch.setattr(throttle, "SETTLE_WAIT", 1.0)
    monkeypatch.setattr(throttle, "SLOT_POLL", 0.125)
    a_pair_with_attempts_in_flight(5)
    assert right(client).status_code == 429
    assert stopped_clock.slept == [0.125] * 8


class ClockAtAMoment(StoppedClock):
    """A wall clock standing at `moment - 1` until the first sleep, at `moment` after it."""

    def __init__(self, moment: float):
        super().__init__()
        self.moment = moment

    def time(self) -> float:
        return self.moment if self.slept else self.moment - 1


def test_a_slot_whose_lifetime_ends_at_a_look_is_free_as_the_counter_says(
    client, db, api, monkeypatch
):
    """The look and the counter's own upsert agree on when a slot has expired (`<=`)."""
    key = TestEmailConcurrency().fill_slots()
    moment = time.time() + 30
    LoginCounter.objects.filter(key=key).update(expires_at=moment)
    monkeypatch.setattr(throttle, "time", ClockAtAMoment(moment))
    assert right(client).status_code == 302
