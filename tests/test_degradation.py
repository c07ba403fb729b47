"""The shared cache or the database down is never a 5xx, and /healthz names the part.

In process: accounts/cache.py's `ResilientCache` over a Redis that is not
there (a closed port) or a private redis-server stopped and started again,
with the database cache as its fallback, and what happens when Redis comes
back; accounts/outage.py's 503 answers. Over real HTTP: the app under
gunicorn pointed at a dead Redis port (sign-in, pages, the proxy, sign-out,
a refresh through the outage) and at a PostgreSQL database dropped while it
serves.
"""

import contextlib
import json
import logging
import re
import shutil
import subprocess
import sys
import time
import uuid

import psycopg
import pytest
import redis
import requests
from django.conf import settings as django_settings
from django.core.cache import caches
from django.db import OperationalError
from django.test import Client, RequestFactory
from django.utils.module_loading import import_string

from accounts import cache as shared_cache
from accounts import outage, refresh
from accounts.cache import FAILOVER_KEY, SwitchBack
from accounts.pacing import AtMostEvery
from tests import fakes
from tests.fakes import calls_to
from tests.flows import (
    adopt_burst_cookies,
    burst,
    post_login,
    sign_in,
    sign_out,
    wait_until_access_expired,
)
from tests.servers import (
    PG,
    ROOT,
    postgres_available,
    prepare_database,
    redis_available,
    reserve_port,
    running_app,
    running_authapi,
    server_env,
    throwaway_database,
)
from tests.services import require

RETRY_AFTER = 0.2
MIRROR_WINDOW = 1.0
UNREACHABLE = "Shared cache 'redis' unreachable"


def dead_redis_url() -> str:
    return f"redis://127.0.0.1:{reserve_port()}/0"


class RedisServer:
    """A private redis-server on a free port, without persistence, that a test stops and starts."""

    def __init__(self, executable: str):
        self.executable = executable
        self.port = reserve_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def redis_server():
    executable = shutil.which("redis-server")
    require(executable is not None, "redis-server is missing: apt-get install -y redis-server")
    server = RedisServer(executable)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def resilient(settings, monkeypatch):
    """Configure the default cache as production does with REDIS_URL; return a maker.

    `resilient(redis_url, **OPTIONS)` gives the `ResilientCache` over that
    Redis and the database cache, with short breaker and mirror windows.
    """
    monkeypatch.setattr(shared_cache, "_circuits", {})

    def make(redis_url: str, **options):
        prefix = f"degradation-{uuid.uuid4().hex[:8]}"
        settings.CACHES = {
            "default": {
                "BACKEND": "accounts.cache.ResilientCache",
                "OPTIONS": {
                    "PRIMARY": "redis",
                    "FALLBACK": "database",
                    "RETRY_AFTER": RETRY_AFTER,
                    "MARKER_INTERVAL": 0.05,
                    "MIRROR_WINDOW": MIRROR_WINDOW,
                    **options,
                },
            },
            "redis": {
                "BACKEND": "accounts.cache.RedisCache",
                "LOCATION": redis_url,
                "KEY_PREFIX": prefix,
                "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
            },
            "database": {
                "BACKEND": "django.core.cache.backends.db.DatabaseCache",
                "LOCATION": "django_cache",
                "KEY_PREFIX": prefix,
            },
        }
        return caches["default"]

    return make


def back_on_redis(shared) -> None:
    """Wait out the breaker, then let one call find Redis answering again."""
    time.sleep(RETRY_AFTER + 0.05)
    shared.get("any-key")
    assert not shared._circuit.open


# --- ResilientCache with Redis unreachable ---------------------------------------


def test_with_redis_unreachable_every_call_is_served_by_the_database_cache(db, resilient):
    shared = resilient(dead_redis_url())
    database = caches["database"]

    shared.set("outcome", {"state": "ok"}, 60)
    assert shared.get("outcome") == {"state": "ok"}
    assert database.get("outcome") == {"state": "ok"}
    assert shared.add("claim", "first", 60) is True
    assert shared.add("claim", "second", 60) is False
    assert database.get("claim") == "first"
    shared.set_many({"b": 1, "c": 2}, 60)
    assert shared.get_many(["outcome", "b", "c", "missing"]) == {
        "outcome": {"state": "ok"},
        "b": 1,
        "c": 2,
    }
    assert shared.incr("b") == 2
    assert shared.has_key("c") is True
    assert shared.has_key("missing") is False
    assert shared.touch("c", 120) is True
    assert shared.delete("outcome") is True
    assert shared.get("outcome", "gone") == "gone"
    shared.delete_many(["b", "c"])
    assert database.get_many(["b", "c"]) == {}
    # Every process is told, through the database, that the fallback is in use.
    assert time.time() - database.get(FAILOVER_KEY) < 5


# Says "ready" once set up, then claims at the instant it is sent on stdin.
CLAIM_AT = """
import sys, time
import django
django.setup()
from django.core.cache import cache
print("ready", flush=True)
time.sleep(max(0.0, float(sys.stdin.readline()) - time.time()))
print(cache.add("accounts:refresh:h", sys.argv[1], 60))
"""


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_during_the_outage_one_claim_wins_among_processes(tmp_path, database):
    """Eight processes (workers, servers) claim one refresh token at the same instant,
    each through its own ResilientCache over a dead Redis: the database cache's `add`
    (an INSERT on its primary key) lets exactly one win."""
    if database == "postgres":
        require(postgres_available(), "PostgreSQL is not running on 127.0.0.1:5432")
        context = throwaway_database("tokenauth_claims", migrated=True)
    else:
        context = contextlib.nullcontext(f"sqlite:///{tmp_path / 'claims.sqlite3'}")
    with context as database_url:
        env = server_env(
            tmp_path / "unused.sqlite3", DATABASE_URL=database_url, REDIS_URL=dead_redis_url()
        )
        prepare_database(env)
        claimers = [
            subprocess.Popen(
                [sys.executable, "-c", CLAIM_AT, f"process-{i}"],
                env=env,
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(8)
        ]
        for claimer in claimers:  # all set up, however long that took on this machine
            assert claimer.stdout.readline().strip() == "ready", claimer.communicate()[1]
        at = f"{time.time() + 0.5}\n"
        for claimer in claimers:
            claimer.stdin.write(at)
            claimer.stdin.flush()
        outputs = [claimer.communicate(timeout=60) for claimer in claimers]
    answers = [out.strip().splitlines()[-1] if out.strip() else err for out, err in outputs]
    assert sorted(answers) == ["False"] * 7 + ["True"]


def test_the_failover_is_logged_once_a_minute_per_process(db, resilient, caplog):
    shared = resilient(dead_redis_url(), RETRY_AFTER=0)  # every call tries Redis again
    with caplog.at_level(logging.INFO, logger="accounts.cache"):
        for i in range(30):
            shared.set(f"k{i}", i, 60)
            assert shared.get(f"k{i}") == i
    records = [r for r in caplog.records if r.name == "accounts.cache"]
    assert [(r.levelno, r.getMessage().split(" (")[0]) for r in records] == [
        (logging.WARNING, UNREACHABLE)
    ]
    assert "using the 'database' cache" in records[0].getMessage()


def test_a_failed_redis_is_skipped_for_retry_after_then_tried_again(db, resilient, monkeypatch):
    shared = resilient(dead_redis_url())
    primary = caches["redis"]
    tried = []
    original = primary.get

    def counted(*args, **kwargs):
        tried.append(time.monotonic())
        return original(*args, **kwargs)

    monkeypatch.setattr(primary, "get", counted)
    for _ in range(20):
        assert shared.get("k", "default") == "default"
    assert len(tried) == 1
    time.sleep(RETRY_AFTER + 0.05)
    shared.get("k")
    shared.get("k")
    assert len(tried) == 2


def test_healthz_is_503_naming_the_cache_when_redis_is_down(db, resilient, client, backend):
    resilient(dead_redis_url())
    fakes.stub_me(backend, status=401)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "database": "ok",
        "cache": "unavailable",
        "backend": "ok",
    }


def test_healthz_asks_redis_itself_not_the_breaker(db, resilient, client, backend, redis_server):
    shared = resilient(redis_server.url, RETRY_AFTER=60)
    fakes.stub_me(backend, status=401)
    assert client.get("/healthz").json()["cache"] == "ok"
    redis_server.stop()
    shared.set("k", 1, 60)  # the breaker opens for a minute
    assert client.get("/healthz").json()["cache"] == "unavailable"
    redis_server.start()
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["cache"] == "ok"


# --- Switching back to Redis -------------------------------------------------------


def test_what_was_written_during_the_outage_is_found_after_it(db, resilient, redis_server, caplog):
    shared = resilient(redis_server.url)
    redis_server.stop()
    assert shared.add("claim", "during", 600) is True
    shared.set("outcome", "during", 600)
    shared.set("deleted-later", "during", 600)
    redis_server.start()  # empty: a restarted Redis keeps nothing
    with caplog.at_level(logging.INFO, logger="accounts.cache"):
        back_on_redis(shared)
    assert "Shared cache answers again; back from the fallback" in caplog.messages

    # Right after: another process may still be on the fallback.
    assert shared.switch_back() is SwitchBack.MIRROR
    assert shared.add("claim", "after", 600) is False
    assert shared.get("claim") == "during"
    assert shared.get_many(["claim", "outcome"]) == {"claim": "during", "outcome": "during"}
    assert shared.delete("deleted-later") is True
    assert shared.get("deleted-later") is None

    # Later, for as long as an outcome is kept: the fallback is still read.
    time.sleep(MIRROR_WINDOW)
    assert shared.switch_back() is SwitchBack.TRAILING
    assert shared.add("claim", "later", 600) is False
    assert shared.get("outcome") == "during"
    assert shared.has_key("outcome") is True
    # New keys live in Redis alone.
    assert shared.add("new-claim", "later", 600) is True
    assert caches["redis"].get("new-claim") == "later"
    assert caches["database"].get("new-claim") is None
    assert caches["redis"].get("claim") is None  # never claimed twice


def test_while_another_process_is_on_the_fallback_claims_meet_there(db, resilient, redis_server):
    shared = resilient(redis_server.url, MIRROR_WINDOW=60)
    database = caches["database"]
    # Another process lost Redis: it announced the failover and claimed in the database cache.
    database.set(FAILOVER_KEY, time.time(), 600)
    assert database.add("theirs", "pending", 600)

    assert shared.add("theirs", "mine", 600) is False
    assert shared.add("mine", "pending", 600) is True
    assert database.add("mine", "theirs", 600) is False  # they see this claim
    assert caches["redis"].get("mine") == "pending"
    shared.set("mine", "done", 600)
    assert database.get("mine") == "done"  # and its outcome
    # A key claimed in Redis first: they are shown Redis's entry, not a claim of ours.
    caches["redis"].set("held", "redis outcome", 600)
    assert shared.add("held", "mine", 600) is False
    assert database.get("held") == "redis outcome"


def test_a_refresh_made_during_the_outage_is_not_made_again_after_it(
    transactional_db, resilient, redis_server, backend, settings
):
    """Invariant 1 across the switch: the outcome kept in the fallback answers the spent token."""
    settings.AUTH_REFRESH_LOCK_TTL = 30  # no alive-mark renewals from the keeper meanwhile
    resilient(redis_server.url)
    fakes.stub_refresh(backend, refresh="refresh-2")
    fakes.stub_me(backend)

    def run():
        return refresh.outcome(
            "refresh-1", binding="b", keep_for=600, deadline=time.monotonic() + 5
        )

    redis_server.stop()
    during = run()
    redis_server.start()
    back_on_redis(caches["default"])
    time.sleep(MIRROR_WINDOW)
    after = run()

    assert during.state == after.state == "ok"
    assert {c.name: c.value for c in after.cookies}["refresh_token"] == "refresh-2"
    assert len(calls_to(backend, "/auth/refresh")) == 1


# --- The database down: accounts/outage.py --------------------------------------------


def handled(exc: Exception, **headers):
    """Return what the handler500 answers while `exc` is being handled."""
    request = RequestFactory().get("/dashboard/", **headers)
    try:
        raise exc
    except Exception:
        return outage.server_error(request)


def test_a_lost_database_connection_is_a_503_page():
    response = handled(OperationalError("connection to server failed"))
    assert response.status_code == 503
    assert response["Retry-After"] == str(outage.RETRY_AFTER)
    assert response["Cache-Control"] == "no-store"
    assert response["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    body = response.content.decode()
    assert "<h1>Service temporarily unavailable</h1>" in body
    assert "connection to server failed" not in body


def test_scripts_get_the_503_as_json():
    response = handled(OperationalError("gone"), HTTP_ACCEPT="application/json")
    assert response.status_code == 503
    assert json.loads(response.content)["error"] == "service_unavailable"


def test_an_error_caused_by_a_lost_connection_is_an_outage_too():
    try:
        raise OperationalError("gone")
    except OperationalError as cause:
        wrapped = RuntimeError("session save failed")
        wrapped.__cause__ = cause
    assert handled(wrapped).status_code == 503


def test_other_errors_keep_the_500_page():
    response = handled(ValueError("a bug"))
    assert response.status_code == 500
    assert "Something went wrong" in response.content.decode()


def test_an_outage_is_logged_once_a_minute_and_not_per_request(monkeypatch, caplog):
    monkeypatch.setattr(outage, "_outage_log", AtMostEvery(outage.LOG_EVERY))
    with caplog.at_level(logging.ERROR, logger="accounts.outage"):
        for _ in range(5):
            handled(OperationalError("gone"))
    assert [r.getMessage() for r in caplog.records if r.name == "accounts.outage"] == [
        "Database unavailable (OperationalError); answering 503 until it is back"
    ]
    quiet = outage.OutageLogFilter()
    for exc, kept in ((OperationalError("gone"), False), (ValueError("a bug"), True)):
        record = logging.LogRecord("django.request", logging.ERROR, "", 0, "x", (), None)
        record.exc_info = (type(exc), exc, None)
        assert quiet.filter(record) is kept


def test_a_session_store_that_cannot_reach_the_database_gives_503_not_500(
    db, locmem_cache, backend, monkeypatch
):
    client = fakes.sign_in_client(Client(raise_request_exception=False), "admin")

    def unreachable(self):
        raise OperationalError("could not connect to server: Connection refused")

    # The store SESSION_ENGINE names, whose own load() reads the row.
    monkeypatch.setattr(
        import_string(f"{django_settings.SESSION_ENGINE}.SessionStore"), "load", unreachable
    )
    page = client.get("/dashboard/")
    assert page.status_code == 503
    assert "Service temporarily unavailable" in page.content.decode()
    api = client.get("/api/users/me")
    assert api.status_code == 503
    assert api.json()["error"] == "service_unavailable"


# --- Over real HTTP: gunicorn with Redis unreachable ------------------------------------


@pytest.fixture(scope="module")
def without_redis(tmp_path_factory):
    """The app (2 gunicorn workers) pointed at a Redis port nothing listens on."""
    workdir = tmp_path_factory.mktemp("without-redis")
    with (
        running_authapi(workdir, AUTHAPI_ACCESS_TTL="4") as api,
        running_app(workdir, api_url=api.url, workers=2, REDIS_URL=dead_redis_url()) as app,
    ):
        yield app, api, time.monotonic()


PAGES = [
    "/",
    "/dashboard/",
    "/dashboard/admin/",
    "/dashboard/evaluations/",
    "/dashboard/profile/",
    "/api/users/me",
]


def test_without_redis_sign_in_pages_proxy_and_sign_out_work(without_redis):
    app, _, _ = without_redis
    _, wrong = post_login(app.url, "admin@example.com", "not the password")
    assert wrong.status_code == 200
    assert "Invalid email or password" in wrong.text

    browser = sign_in(app.url)
    statuses = {
        path: browser.get(f"{app.url}{path}", allow_redirects=False, timeout=10).status_code
        for path in PAGES
    }
    assert statuses == dict.fromkeys(PAGES, 200)
    assert browser.get(f"{app.url}/api/users/me", timeout=10).json()["email"] == (
        "admin@example.com"
    )

    assert sign_out(browser, app.url).status_code == 302
    after = browser.get(f"{app.url}/dashboard/", allow_redirects=False, timeout=10)
    assert after.status_code == 302
    assert "/accounts/login/" in after.headers["Location"]


def test_without_redis_healthz_is_503_naming_the_cache(without_redis):
    app, _, _ = without_redis
    response = requests.get(f"{app.url}/healthz", timeout=10)
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "database": "ok",
        "cache": "unavailable",
        "backend": "ok",
    }


def test_without_redis_a_refresh_reaches_the_backend_once(without_redis):
    """Claims on the database cache coordinate both workers: one refresh for a burst."""
    app, api, started = without_redis
    browser = sign_in(app.url)
    before = api.stats()
    wait_until_access_expired(browser)
    responses = burst([f"{app.url}{PAGES[1 + i % 5]}" for i in range(12)], browser)

    assert [getattr(r, "status_code", repr(r)) for r in responses] == [200] * 12
    renewed = {r.cookies.get("refresh_token") for r in responses} - {None}
    assert len(renewed) == 1
    after = api.stats()
    assert after["refresh"] - before["refresh"] == 1
    assert after["reuse_detected"] - before["reuse_detected"] == 0
    adopt_burst_cookies(browser, responses)
    page = browser.get(f"{app.url}/dashboard/", allow_redirects=False, timeout=10)
    assert page.status_code == 200

    # Said once a minute per worker, at WARNING; no traceback, no 5xx in the access log
    # (but /healthz's deliberate 503).
    log = app.log()
    minutes = int((time.monotonic() - started) // 60) + 1
    assert 1 <= log.count(f"WARNING accounts.cache {UNREACHABLE}") <= 2 * minutes
    assert "Traceback" not in log
    assert [line for line in log.splitlines() if re.search(r'" 5\d\d ', line)] == [
        line for line in log.splitlines() if '"GET /healthz HTTP/1.1" 503 ' in line
    ]


# --- Over real HTTP: the PostgreSQL database gone -----------------------------------------


def test_with_the_database_gone_pages_answer_503_and_healthz_names_it(tmp_path):
    require(postgres_available(), "PostgreSQL is not running on 127.0.0.1:5432")
    require(redis_available(), "Redis is not running on 127.0.0.1:6379")
    with (
        throwaway_database("tokenauth_outage", migrated=True) as database_url,
        running_authapi(tmp_path) as api,
        running_app(
            tmp_path,
            api_url=api.url,
            workers=1,
            DATABASE_URL=database_url,
            REDIS_URL="redis://127.0.0.1:6379/0",
            CACHE_KEY_PREFIX=f"outage-{uuid.uuid4().hex[:8]}",
        ) as app,
    ):
        browser = sign_in(app.url)
        assert browser.get(f"{app.url}/dashboard/", timeout=10).status_code == 200
        with psycopg.connect(f"{PG}/test", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{database_url.rsplit("/", 1)[1]}" WITH (FORCE)')

        page = browser.get(f"{app.url}/dashboard/", allow_redirects=False, timeout=15)
        assert page.status_code == 503
        assert "<h1>Service temporarily unavailable</h1>" in page.text
        assert page.headers["Retry-After"] == str(outage.RETRY_AFTER)
        api_call = browser.get(f"{app.url}/api/users/me", timeout=15)
        assert api_call.status_code == 503
        assert api_call.json()["error"] == "service_unavailable"
        _, signing_in = post_login(app.url, "admin@example.com", "admin-demo-pass")
        assert signing_in.status_code == 503
        health = requests.get(f"{app.url}/healthz", timeout=15)
        assert health.status_code == 503
        assert health.json() == {
            "status": "unavailable",
            "database": "unavailable",
            "cache": "ok",
            "backend": "ok",
        }
        log = app.log()
    assert log.count("Database unavailable (OperationalError)") == 1
    assert "Internal Server Error" not in log
