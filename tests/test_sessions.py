"""The session stores SESSION_ENGINE may name, each test against each of them.

accounts.sessions (the ORM's `select_related` and `update()`) and
accounts.sessions_raw (the same store with hand-written SQL): Django's
database store, the session and its user read in one statement.
"""

from datetime import timedelta
from importlib import import_module

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.sessions.backends.base import UpdateError
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.backends import AuthApiBackend, offering
from accounts.checks import TOKEN_MIDDLEWARE, check_middleware_order, check_session_engine
from accounts.models import Session
from tests import fakes

pytestmark = pytest.mark.django_db

User = get_user_model()

ENGINES = ["accounts.sessions", "accounts.sessions_raw"]


@pytest.fixture(autouse=True, params=ENGINES)
def engine(request, settings):
    """Run the test with SESSION_ENGINE naming this store (the middleware reads it too)."""
    settings.SESSION_ENGINE = request.param
    return import_module(request.param)


def SessionStore(session_key=None):  # noqa: N802 - stands for the engine's class
    """Return a store of the engine under test."""
    return import_module(django_settings.SESSION_ENGINE).SessionStore(session_key)


def saved(data: dict) -> str:
    store = SessionStore()
    store.update(data)
    store.save()
    return store.session_key


def test_a_saved_session_reads_back():
    key = saved({"who": "Ünïcode €", "n": 3})
    assert SessionStore(session_key=key).load() == {"who": "Ünïcode €", "n": 3}


def test_an_expired_session_reads_as_empty_and_gets_no_key():
    key = saved({"who": "someone"})
    Session.objects.filter(pk=key).update(expire_date=timezone.now() - timedelta(seconds=1))
    store = SessionStore(session_key=key)
    assert store.load() == {}
    assert store.session_key is None


@pytest.mark.parametrize("key", ["nosuchsessionkeyatall000000000000", "x' OR '1'='1"])
def test_an_unknown_or_hostile_key_reads_as_empty(key):
    saved({"who": "someone"})
    assert SessionStore(session_key=key).load() == {}


def test_a_store_that_finds_no_session_offers_no_user():
    user = User.objects.create_user("ünï")
    found = SessionStore(session_key=saved({SESSION_KEY: str(user.pk)}))
    found.load()
    assert found.prefetched_user == user
    missing = SessionStore(session_key="nosuchsessionkeyatall000000000000")
    missing.load()
    assert missing.prefetched_user is None


def test_tampered_data_reads_as_empty():
    key = saved({"who": "someone"})
    Session.objects.filter(pk=key).update(session_data="tampered:garbage")
    assert SessionStore(session_key=key).load() == {}


def test_the_engine_keeps_its_sessions_in_the_model_with_the_user_column():
    assert import_module(django_settings.SESSION_ENGINE).SessionStore.get_model_class() is Session
    assert Session.get_session_store_class().get_model_class() is Session
    assert check_session_engine() == []  # accounts.E015


# One query for the session and its user (accounts/sessions.py, accounts/middleware.py).


def test_a_session_records_whose_it_is():
    user = User.objects.create_user("ünï", email="u@example.com")
    key = saved({SESSION_KEY: str(user.pk)})
    assert Session.objects.get(pk=key).user_id == user.pk


@pytest.mark.parametrize("value", [None, "", "not-a-number", ["1"], True, False])
def test_a_session_without_a_usable_user_id_records_none(value):
    key = saved({SESSION_KEY: value} if value is not None else {"who": "anonymous"})
    assert Session.objects.get(pk=key).user_id is None


def test_loading_a_session_brings_its_user_row_exactly_as_the_orm_reads_it():
    user = User.objects.create_user("ünï", email="u@example.com", first_name="Zoë")
    User.objects.filter(pk=user.pk).update(last_login=timezone.now(), roles=["admin", "é"])
    key = saved({SESSION_KEY: str(user.pk)})
    store = SessionStore(session_key=key)
    store.load()
    prefetched = store.prefetched_user
    expected = User.objects.get(pk=user.pk)
    assert isinstance(prefetched, User)
    for field in User._meta.concrete_fields:
        got, want = getattr(prefetched, field.attname), getattr(expected, field.attname)
        assert (got, type(got)) == (want, type(want)), field.name
    assert prefetched._state.adding is False
    assert prefetched._state.db == expected._state.db


def test_a_session_whose_user_is_gone_brings_no_row():
    user = User.objects.create_user("gone")
    key = saved({SESSION_KEY: str(user.pk)})
    User.objects.filter(pk=user.pk).update(id=user.pk + 1000)  # the row no longer matches
    store = SessionStore(session_key=key)
    assert store.load() == {SESSION_KEY: str(user.pk)}
    assert store.prefetched_user is None


def test_a_signed_in_page_reads_session_and_user_in_one_query(signed_in, client, backend):
    signed_in("admin", access=fakes.access_jwt())
    fakes.stub_me(backend, "admin")
    client.get("/dashboard/")  # settles anything the sign-in left to do
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/dashboard/").status_code == 200
    user_table = User._meta.db_table
    reads = [q["sql"] for q in queries.captured_queries if user_table in q["sql"]]
    assert len(reads) == 1, reads
    assert Session._meta.db_table in reads[0]


def test_the_backend_ignores_an_offered_row_of_another_user():
    mine = User.objects.create_user("mine")
    other = User.objects.create_user("other")
    with offering(other):
        assert AuthApiBackend().get_user(mine.pk) == mine
    with offering(mine):
        got = AuthApiBackend().get_user(mine.pk)
    assert got is mine


def test_an_offered_row_of_an_inactive_user_signs_nobody_in():
    user = User.objects.create_user("off", is_active=False)
    with offering(user):
        assert AuthApiBackend().get_user(user.pk) is None


def test_the_auth_middleware_check_accepts_the_subclass_in_place(settings):
    assert check_middleware_order() == []
    order = list(settings.MIDDLEWARE)
    order.remove(TOKEN_MIDDLEWARE)
    order.insert(order.index("accounts.middleware.AuthenticationMiddleware"), TOKEN_MIDDLEWARE)
    settings.MIDDLEWARE = order
    messages = [w.msg for w in check_middleware_order()]
    assert any("accounts.middleware.AuthenticationMiddleware" in m for m in messages), messages


def test_saving_an_existing_session_is_one_statement():
    user = User.objects.create_user("ünï")
    key = saved({"who": "é"})
    store = SessionStore(session_key=key)
    store[SESSION_KEY] = str(user.pk)
    store["who"] = "€"
    with CaptureQueriesContext(connection) as queries:
        store.save()
    assert len(queries.captured_queries) == 1, queries.captured_queries
    assert queries.captured_queries[0]["sql"].startswith("UPDATE")
    row = Session.objects.get(pk=key)
    assert row.user_id == user.pk
    assert SessionStore(session_key=key).load() == {SESSION_KEY: str(user.pk), "who": "€"}


def test_saving_an_existing_session_writes_every_column_of_the_row():
    """A column added to accounts.Session is saved by both stores (the raw one lists them)."""
    key = saved({"who": "é"})
    store = SessionStore(session_key=key)
    store["who"] = "€"
    with CaptureQueriesContext(connection) as queries:
        store.save()
    (update,) = [q["sql"] for q in queries.captured_queries]
    assignments = update.split(" SET ", 1)[1].split(" WHERE ", 1)[0]
    columns = [f.column for f in Session._meta.concrete_fields if not f.primary_key]
    assert [c for c in columns if connection.ops.quote_name(c) not in assignments] == []


def test_saving_a_session_deleted_meanwhile_is_an_update_error():
    key = saved({"who": "someone"})
    store = SessionStore(session_key=key)
    store["who"] = "else"  # read before the row went
    Session.objects.filter(pk=key).delete()
    with pytest.raises(UpdateError):
        store.save()
    assert not Session.objects.filter(pk=key).exists()


def test_a_database_error_while_saving_is_an_update_error():
    key = saved({"who": "someone"})
    store = SessionStore(session_key=key)
    store.load()

    def refuse_updates(execute, sql, params, many, context):
        if sql.startswith("UPDATE"):
            raise DatabaseError("could not serialize access")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(refuse_updates), pytest.raises(UpdateError):
        store.save()


def test_the_expiry_is_saved_too():
    key = saved({"who": "someone"})
    store = SessionStore(session_key=key)
    store.load()
    store.set_expiry(60)
    store.save()
    left = Session.objects.get(pk=key).expire_date - timezone.now()
    assert timedelta(seconds=50) < left <= timedelta(seconds=60)


@pytest.mark.django_db(transaction=True)
def test_the_migration_brings_the_unexpired_sessions_along():
    """Deploying 0004 signs nobody out: Django's table's live sessions move over."""
    from django.core.management import call_command

    call_command("migrate", "accounts", "0003", verbosity=0)
    try:
        now = timezone.now()
        live = SessionStore().encode({SESSION_KEY: "7", "who": "é"})
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM django_session")
            cursor.executemany(
                "INSERT INTO django_session (session_key, session_data, expire_date) "
                "VALUES (%s, %s, %s)",
                [
                    ("livesessionkey000000000000000000", live, now + timedelta(days=1)),
                    ("deadsessionkey000000000000000000", live, now - timedelta(seconds=1)),
                ],
            )
    finally:
        call_command("migrate", "accounts", verbosity=0)
    moved = list(Session.objects.values_list("session_key", "user_id"))
    assert moved == [("livesessionkey000000000000000000", None)]
    store = SessionStore(session_key="livesessionkey000000000000000000")
    assert store.load() == {SESSION_KEY: "7", "who": "é"}
    store.save()  # its user column fills in at its next save
    assert Session.objects.get(pk="livesessionkey000000000000000000").user_id == 7


def test_clearsessions_removes_expired_rows():
    from django.core.management import call_command

    kept, gone = saved({"n": 1}), saved({"n": 2})
    Session.objects.filter(pk=gone).update(expire_date=timezone.now() - timedelta(seconds=1))

    call_command("clearsessions")

    assert set(Session.objects.values_list("pk", flat=True)) == {kept}


# --- the statements as a new worker process builds them -----------------------------------


@pytest.fixture
def fresh_statements(engine):
    """Build the join and the UPDATE anew, as each new worker process does (they are cached).

    accounts.sessions_raw caches its statements; the ORM compiles each query anew.
    """
    names = ("_joined_query", "_update_statement")
    built = [getattr(engine, name) for name in names if hasattr(engine, name)]
    for cached in built:
        cached.cache_clear()
    yield
    for cached in built:
        cached.cache_clear()


def test_a_new_process_reads_and_saves_with_statements_of_its_own(fresh_statements):
    user = User.objects.create_user("ünï", email="u@example.com", first_name="Zoë")
    User.objects.filter(pk=user.pk).update(last_login=timezone.now(), roles=["admin", "é"])
    key = saved({SESSION_KEY: str(user.pk), "who": "é"})

    store = SessionStore(session_key=key)
    assert store.load() == {SESSION_KEY: str(user.pk), "who": "é"}
    expected = User.objects.get(pk=user.pk)
    for field in User._meta.concrete_fields:
        got, want = getattr(store.prefetched_user, field.attname), getattr(expected, field.attname)
        assert (got, type(got)) == (want, type(want)), field.name

    store["who"] = "€"
    store.set_expiry(600)
    store.save()
    row = Session.objects.get(pk=key)
    assert row.user_id == user.pk
    assert timedelta(seconds=590) < row.expire_date - timezone.now() <= timedelta(seconds=600)
    assert SessionStore(session_key=key).load()["who"] == "€"


def test_fields_with_conversions_of_their_own_load_through_the_join_as_through_the_orm(
    fresh_statements, monkeypatch
):
    """A user model's own field types (an encrypted field; DurationField on SQLite) convert
    what the database returns with the column and the connection: the join converts the
    user's columns exactly as a queryset does, and hands the model's `from_db` the same
    field names."""
    user = User.objects.create_user("ünï", email="u@example.com", first_name="Zoë")
    key = saved({SESSION_KEY: str(user.pk)})

    def own_conversion(field):
        def get_db_converters(connection):
            def convert(value, expression, conn):
                if value is None:
                    return value
                mark = f"{expression.target.name}|{connection.alias}|{conn.alias}"
                return f"{value}|{mark}"

            return [convert]

        return get_db_converters

    field = User._meta.get_field("first_name")
    monkeypatch.setattr(field, "get_db_converters", own_conversion(field))
    seen = []
    orm_from_db = User.from_db.__func__

    def from_db(cls, db, field_names, values):
        seen.append(list(field_names))
        return orm_from_db(cls, db, field_names, values)

    monkeypatch.setattr(User, "from_db", classmethod(from_db))

    store = SessionStore(session_key=key)
    store.load()
    expected = User.objects.get(pk=user.pk)

    assert store.prefetched_user.first_name == "Zoë|first_name|default|default"
    assert store.prefetched_user.first_name == expected.first_name
    assert seen[0] == seen[1] == [field.attname for field in User._meta.concrete_fields]


class RecordingRouter:
    """A database router that only watches: which models, which instances it is asked about."""

    def __init__(self):
        self.reads, self.writes = [], []

    def db_for_read(self, model, **hints):
        self.reads.append(model)

    def db_for_write(self, model, **hints):
        self.writes.append((model, getattr(hints.get("instance"), "pk", None)))


def test_a_database_router_is_asked_where_sessions_are_read_and_saved(settings):
    """Sessions may live in a database of their own (Django's docs route them so)."""
    key = saved({"n": 1})
    router = RecordingRouter()
    settings.DATABASE_ROUTERS = [router]
    store = SessionStore(session_key=key)
    store.load()
    store["n"] = 2
    store.save()
    assert Session in router.reads
    assert (Session, key) in router.writes
