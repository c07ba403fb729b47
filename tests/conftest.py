import os
import threading
from concurrent.futures import wait

import pytest
import responses
from django.core.management import call_command
from django.test import Client

from tests import fakes

# `make test` runs pytest-xdist with --dist loadfile: each file's tests run in one
# worker, so a module's servers start once, and files are handed out in
# collection order. A long file handed out last runs alone at the end while the
# other core idles, so the longest go first, longest first (by `--durations` of
# a full run); the rest keep their order.
LONGEST_FIRST = (
    "test_shapes.py",
    "test_authcheck.py",
    "test_invariants.py",
    "test_browser_refresh.py",
    "test_stress.py",
    "test_security.py",
    "test_degradation.py",
    "test_refresh_concurrency.py",
    "test_storage_integration.py",
    "test_deploy.py",
    "test_browser_signin.py",
    "test_throttle.py",
    "test_browser_pages.py",
    "test_sessions_page.py",
    "test_scale_out.py",
    "test_authapi_server.py",
    "test_health_page.py",
    "test_browser_session_storage.py",
)


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: three workers per core, not one.

    Most of this suite's time is spent waiting: on the servers a test started
    (their startup, a token's expiry, a slow or frozen backend), not on the
    test's own CPU. A full run with one worker per core keeps the 2-core
    machine about half busy; three per core fill the waits (docs/testing.md).
    """
    return 3 * len(os.sched_getaffinity(0))


def pytest_sessionstart(session):
    """Under xdist, rewrite the test modules' asserts once, before the workers start.

    Each worker imports every test module, and pytest rewrites their asserts on
    import: about 9 s of CPU per process for this suite. pytest keeps the
    rewritten code in `tests/__pycache__`, but not where bytecode writing is off
    (PYTHONDONTWRITEBYTECODE, as on this project's CI machines), and on a fresh
    clone the workers all start at once with nothing there. So the controller
    (which runs no tests) imports them first, writing the cache, and the
    workers read it. Runs before xdist starts its workers (its own
    `pytest_sessionstart` is trylast).
    """
    config = session.config
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        return
    import importlib
    import sys
    from pathlib import Path

    keep, sys.dont_write_bytecode = sys.dont_write_bytecode, False
    try:
        for path in sorted(Path(__file__).parent.glob("test_*.py")):
            importlib.import_module(f"tests.{path.stem}")
    finally:
        sys.dont_write_bytecode = keep


@pytest.hookimpl(trylast=True)  # after pytest-django's own ordering
def pytest_collection_modifyitems(items):
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(autouse=True)
def backend_clock_in_step(monkeypatch):
    """The skew accounts/clock.py measured is per process: none leaks between tests."""
    from accounts import clock

    monkeypatch.setattr(clock, "_skew", 0.0)


@pytest.fixture(autouse=True)
def own_timeline_buffer(monkeypatch):
    """Each test counts into a health-timeline buffer of its own, whose timer (a flush a
    second later, accounts/ops/timeline.py) stops with the test: no count of one test
    lands in the cache of the next."""
    from accounts.ops import timeline

    buffer = timeline.TimelineBuffer()
    monkeypatch.setattr(timeline, "_buffer", buffer)
    yield
    buffer.stop()
    timeline._buffer.stop()  # one a test put in its place


@pytest.fixture(autouse=True)
def own_refresh_pool(monkeypatch):
    """Each test gets a refresh pool and alive-mark keeper of its own, in its own process.

    accounts.refresh keeps one pool per process; a pool created before a fork
    (mutation testing, xdist) has no threads in the child and never runs a call.
    """
    from accounts import refresh

    monkeypatch.setattr(refresh, "_pool", None)
    monkeypatch.setattr(refresh, "_pool_lock", threading.Lock())
    monkeypatch.setattr(refresh, "_keeper", refresh._Keeper())
    yield
    if refresh._pool is not None:
        refresh._pool.shutdown(wait=False)


STORAGE_MODES = ("cookies", "session")


@pytest.fixture(scope="module", params=STORAGE_MODES)
def storage_mode(request) -> str:
    """AUTH_TOKEN_STORAGE for a module's servers: each test of the module runs in both modes."""
    return request.param


@pytest.fixture
def api_client(settings, db):
    """A Django test client that speaks to the reference API as its own server does.

    Same URLconf, no middleware (see authapi/server.py), demo users seeded.
    """
    settings.ROOT_URLCONF = "authapi.urls"
    settings.MIDDLEWARE = []
    call_command("seed_demo_users", quiet=True)
    return Client()


@pytest.fixture
def backend(settings):
    """The auth backend as `responses` stubs at fakes.BASE; unmatched calls fail."""
    settings.API_BASEURL = fakes.BASE
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def csrf_client(db):
    """A test client that enforces CSRF like a browser session would be checked."""
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def locmem_cache(settings, request):
    """A private in-process cache: refresh pool threads see it without the test DB."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": request.node.nodeid,
        }
    }
    from django.core.cache import cache

    cache.clear()
    return cache


@pytest.fixture
def signed_in(client, db, locmem_cache, backend):
    """Sign a test client in as a PROFILES user holding the given token cookies."""

    def sign_in(who="admin", access=None, refresh="refresh-1"):
        return fakes.sign_in_client(client, who, access=access, refresh=refresh)

    return sign_in


@pytest.fixture
def settle(backend, locmem_cache, monkeypatch):
    """Every refresh started in the test has finished before the stubs and the cache go.

    Refresh calls run in a process-wide pool; one still running at teardown
    would reach the real network or another test's cache. Yields the list of
    the futures of the refreshes started so far.
    """
    from accounts import refresh

    futures = []
    start = refresh.start

    def recorded(*args, **kwargs):
        claim = start(*args, **kwargs)
        if claim is not None:
            futures.append(claim.future)
        return claim

    monkeypatch.setattr(refresh, "start", recorded)
    yield futures
    wait(futures, timeout=30)
    # A mark still held would be renewed by the keeper in the next test's cache.
    assert not refresh._keeper._held, "a refresh's alive mark was never released"


@pytest.fixture
def gates(settle):
    """Make `fakes.Gate`s that are all opened at teardown (before `settle` waits)."""
    made = []

    def make(limit: float = 10.0):
        gate = fakes.Gate(limit)
        made.append(gate)
        return gate

    yield make
    for gate in made:
        gate.open()
