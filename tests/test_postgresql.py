"""accounts/postgresql: the health check that needs no round trip while a connection is idle."""

import select

import psycopg
import pytest
from django.db.utils import load_backend

from tests.servers import PG, postgres_available, throwaway_database
from tests.services import require

DatabaseWrapper = load_backend("accounts.postgresql").DatabaseWrapper


@pytest.fixture(scope="module")
def database_url():
    require(postgres_available(), "PostgreSQL is not running on 127.0.0.1:5432")
    with throwaway_database("healthcheck") as url:
        yield url


@pytest.fixture
def wrapper(database_url, monkeypatch, django_db_blocker):
    name = database_url.rsplit("/", 1)[1]
    settings = {
        "ENGINE": "accounts.postgresql",
        "NAME": name,
        "USER": "postgres",
        "PASSWORD": "",
        "HOST": "127.0.0.1",
        "PORT": "5432",
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
        "AUTOCOMMIT": True,
        "ATOMIC_REQUESTS": False,
        "OPTIONS": {},
        "TIME_ZONE": None,
        "TEST": {},
    }
    db = DatabaseWrapper(settings, alias="healthcheck")
    checks = []
    real = DatabaseWrapper.is_usable
    monkeypatch.setattr(DatabaseWrapper, "is_usable", lambda self: checks.append(1) or real(self))
    db.checks = checks
    with django_db_blocker.unblock():  # a connection of its own, outside the test database
        yield db
        db.close()


def backend_pid(db) -> int:
    with db.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def next_request(db) -> None:
    """What Django does between two requests on one thread (close_old_connections)."""
    db.close_if_unusable_or_obsolete()


def test_an_idle_connection_is_reused_without_a_select_1(wrapper):
    pid = backend_pid(wrapper)
    for _ in range(3):
        next_request(wrapper)
        assert backend_pid(wrapper) == pid
    assert wrapper.checks == []


def test_a_connection_the_server_ended_is_replaced_before_the_first_query(wrapper, database_url):
    pid = backend_pid(wrapper)
    next_request(wrapper)
    with psycopg.connect(f"{PG}/test", autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    # pg_terminate_backend returns at once; the backend says goodbye just after.
    select.select([wrapper.connection.fileno()], [], [], 5)
    # The server's goodbye is on the socket: Django's own check runs, fails,
    # and the request's first query goes out on a new connection, not an error.
    new_pid = backend_pid(wrapper)
    assert new_pid != pid
    assert wrapper.checks == [1]


def test_a_connection_inside_a_transaction_gets_the_full_check(wrapper):
    backend_pid(wrapper)
    next_request(wrapper)
    wrapper.connection.execute("BEGIN")  # left open, as a crashed request might
    backend_pid(wrapper)
    assert wrapper.checks == [1]
