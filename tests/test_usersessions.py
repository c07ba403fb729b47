"""accounts.usersessions: the index of a user's signed-in browsers, over any server-side store.

Each test that depends on the store runs on the package's own store
(accounts.sessions) and on Django's `db` and `cached_db`: the sessions page,
ending another browser and back-channel sign-out work on every one of them.
"""

import time
from datetime import UTC, datetime, timedelta
from importlib import import_module

import jwt
import pytest
from django.conf import settings as django_settings
from django.contrib.auth import SESSION_KEY, logout
from django.core.management import call_command
from django.db import OperationalError, connection
from django.db.models import QuerySet
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import PendingRevocation
from accounts.usersessions import signins
from accounts.usersessions.checks import check_middleware
from accounts.usersessions.models import UserSession
from tests import fakes
from tests.test_backchannel import SECRET as BACKCHANNEL_SECRET
from tests.test_backchannel import make_token, post

ENGINES = [
    "accounts.sessions",
    "django.contrib.sessions.backends.db",
    "django.contrib.sessions.backends.cached_db",
]


@pytest.fixture(params=ENGINES)
def engine(request, settings, db, locmem_cache):
    settings.SESSION_ENGINE = request.param
    return request.param


@pytest.fixture(autouse=True)
def forgetful():
    """Each test starts with no session noted as seen in this process."""
    signins._seen.clear()
    yield
    signins._seen.clear()


def store(session_key=None):
    return import_module(django_settings.SESSION_ENGINE).SessionStore(session_key)


def request_for(user_agent: str = "", address: str = "203.0.113.9", cookie: str = ""):
    request = RequestFactory().get(
        "/", HTTP_USER_AGENT=user_agent, REMOTE_ADDR=address, HTTP_COOKIE=cookie
    )
    request.session = store()
    return request


# --- written at sign-in, deleted at sign-out ------------------------------------------


def access_with_sid(sid) -> str:
    now = int(time.time())
    claims = {"sub": "1", "iat": now, "exp": now + 1800, "sid": sid}
    return jwt.encode(claims, fakes.JWT_KEY, algorithm="HS256")


def test_signing_in_writes_the_row_from_the_request(engine):
    user = fakes.make_user("admin")
    request = request_for(
        "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36",
        cookie=f"access_token={access_with_sid(42)}",
    )
    request.session.create()

    signins.record(sender=None, request=request, user=user)

    row = UserSession.objects.get(pk=request.session.session_key)
    assert (row.user, row.device, row.address, row.backend_sid) == (
        user,
        "Chrome 131 on Linux",
        "203.0.113.9",
        "42",
    )
    assert timezone.now() - row.signed_in_at < timedelta(seconds=5)
    assert abs(row.expires_at - request.session.get_expiry_date()) < timedelta(seconds=1)
    assert row.last_seen is not None
    assert request.session[signins.SIGN_IN_KEY]["device"] == "Chrome 131 on Linux"


def test_a_sign_in_after_another_users_flush_gets_a_key_and_a_row(engine):
    user = fakes.make_user("admin")
    request = request_for()
    assert request.session.session_key is None  # as after login() flushed another user's
    signins.record(sender=None, request=request, user=user)
    key = request.session.session_key
    assert key is not None
    assert UserSession.objects.filter(pk=key, user=user).exists()
    assert store().exists(key)


def test_signing_in_purges_rows_that_have_expired(engine):
    someone = fakes.make_user("evaluator")
    stale = fakes.user_session(someone)
    UserSession.objects.filter(pk=stale).update(expires_at=timezone.now() - timedelta(seconds=1))
    kept = fakes.user_session(someone)

    signins.record(sender=None, request=request_for(), user=fakes.make_user("admin"))

    assert not UserSession.objects.filter(pk=stale).exists()
    assert UserSession.objects.filter(pk=kept).exists()


def test_a_sign_in_through_the_test_client_is_indexed_too(engine, client):
    fakes.sign_in_client(client, "admin", access=fakes.access_jwt())
    assert UserSession.objects.filter(pk=client.session.session_key).exists()


def test_logout_deletes_the_row(engine):
    user = fakes.make_user("admin")
    key = fakes.user_session(user)
    request = request_for()
    request.session = store(key)
    request.user = user

    logout(request)

    assert not UserSession.objects.filter(pk=key).exists()
    assert not store().exists(key)


def test_signing_out_through_the_page_deletes_the_row(engine, client, backend):
    fakes.sign_in_client(client, "admin", access=fakes.access_jwt())
    key = client.session.session_key
    fakes.stub_logout(backend)

    assert client.post("/accounts/logout/").status_code == 302

    assert not UserSession.objects.filter(pk=key).exists()


# --- last seen ----------------------------------------------------------------------------


def seen_long_ago(key: str):
    long_ago = timezone.now() - timedelta(hours=1)
    UserSession.objects.filter(pk=key).update(last_seen=long_ago)
    return long_ago


def last_seen(key: str):
    return UserSession.objects.get(pk=key).last_seen


def test_a_signed_in_page_writes_last_seen_once_an_interval(engine, client, backend, settings):
    settings.AUTH_SESSION_TOUCH_INTERVAL = 60
    fakes.sign_in_client(client, "admin", access=fakes.access_jwt())
    key = client.session.session_key
    long_ago = seen_long_ago(key)

    assert client.get("/dashboard/").status_code == 200
    assert last_seen(key) - long_ago > timedelta(minutes=59)
    long_ago = seen_long_ago(key)
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/dashboard/").status_code == 200  # within the interval
    assert last_seen(key) == long_ago
    assert not [q for q in queries.captured_queries if "usersessions_usersession" in q["sql"]]


def test_touching_records_where_the_tokens_are(engine, client, backend, settings):
    settings.AUTH_TOKEN_STORAGE = "session"
    fakes.sign_in_client(client, "admin", access=fakes.access_jwt(), storage="session")
    key = client.session.session_key
    UserSession.objects.filter(pk=key).update(token_storage="")
    client.get("/dashboard/")
    assert UserSession.objects.get(pk=key).token_storage == "session"


def test_a_visitors_session_is_left_alone(engine, client):
    visitor = store()
    visitor["visited"] = "the sign-in page"
    visitor.create()
    client.cookies[django_settings.SESSION_COOKIE_NAME] = visitor.session_key
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/").status_code == 200
    assert not [q for q in queries.captured_queries if "usersessions_usersession" in q["sql"]]


def test_a_session_is_due_again_exactly_the_interval_after(settings, monkeypatch):
    settings.AUTH_SESSION_TOUCH_INTERVAL = 60
    clock = [1000.0]
    monkeypatch.setattr(signins.time, "monotonic", lambda: clock[0])
    signins._seen.note("k")
    clock[0] += 59.999
    assert not signins._seen.due("k")
    clock[0] = 1060.0
    assert signins._seen.due("k")
    assert signins._seen.due("never-seen")


def test_the_seen_list_keeps_the_most_recent(monkeypatch):
    monkeypatch.setattr(signins._Seen, "LIMIT", 2)
    seen = signins._Seen()
    for key in ("a", "b", "a", "c"):
        seen.note(key)
    assert not seen.due("a") and not seen.due("c")
    assert seen.due("b")  # the oldest, dropped


def test_a_touch_the_database_refuses_is_tried_again_next_time(
    engine, client, backend, monkeypatch
):
    fakes.sign_in_client(client, "admin", access=fakes.access_jwt())
    key = client.session.session_key
    long_ago = seen_long_ago(key)
    update = QuerySet.update

    def refused(queryset, **values):
        if queryset.model is UserSession:
            raise OperationalError("database is locked")
        return update(queryset, **values)

    monkeypatch.setattr(QuerySet, "update", refused)
    assert client.get("/dashboard/").status_code == 200  # only "last seen" is late
    assert last_seen(key) == long_ago
    monkeypatch.undo()
    client.get("/dashboard/")
    assert last_seen(key) > long_ago + timedelta(minutes=59)


# --- every feature on every server-side store --------------------------------------------


def browser_of(who: str, *, device: str, refresh: str) -> Client:
    browser = fakes.sign_in_client(Client(), who, access=fakes.access_jwt(), refresh=refresh)
    UserSession.objects.filter(pk=browser.session.session_key).update(device=device)
    return browser


def test_the_sessions_page_lists_and_ends_another_browser(engine, backend):
    here = browser_of("admin", device="Chrome 131 on Linux", refresh="refresh-1")
    there = browser_of("admin", device="Firefox 133 on Windows", refresh="refresh-9")
    logout_call = fakes.stub_logout(backend)

    page = here.get("/accounts/sessions/").content.decode()
    assert "Chrome 131 on Linux" in page and "Firefox 133 on Windows" in page
    there_id = signins.public_id(there.session.session_key)
    there_key = there.session.session_key

    assert here.post(f"/accounts/sessions/{there_id}/end/").status_code == 302

    assert len(logout_call.calls) == 1  # its pair revoked at the backend
    assert not store().exists(there_key)
    assert not UserSession.objects.filter(pk=there_key).exists()
    assert there.get("/dashboard/").status_code == 302  # signed out at its next request
    page = here.get("/accounts/sessions/").content.decode()
    assert page.count("Firefox 133 on Windows") == 1  # "Signed out Firefox 133 on Windows."


def test_sign_out_everywhere_else_with_the_backend_down_queues(engine, backend):
    here = browser_of("admin", device="Chrome", refresh="refresh-1")
    others = [browser_of("admin", device=f"Other {n}", refresh=f"refresh-{n + 2}") for n in (1, 2)]
    backend.post(f"{fakes.BASE}/auth/logout", body=fakes.connection_refused())

    here.post("/accounts/sessions/end-others/")

    assert PendingRevocation.objects.count() == 2
    assert fakes.live_session_keys() == {here.session.session_key}
    for other in others:
        assert other.get("/dashboard/").status_code == 302


def test_backchannel_sign_out_ends_the_sessions_in_the_store(engine, settings):
    settings.AUTH_BACKCHANNEL_SECRET = BACKCHANNEL_SECRET
    settings.AUTH_BACKCHANNEL_MAX_AGE = 120
    admin, evaluator = fakes.make_user("admin"), fakes.make_user("evaluator")
    mine = [fakes.user_session(admin, sid="a"), fakes.user_session(admin, sid="b")]
    theirs = fakes.user_session(evaluator, sid="e")

    response = post(Client(), make_token(sid="a"))

    assert response.json() == {"ok": True, "ended": 1}
    assert not store().exists(mine[0])
    assert fakes.live_session_keys() == {mine[1], theirs}


def test_a_row_whose_session_the_store_lost_is_not_listed_and_goes(engine):
    admin = fakes.make_user("admin")
    kept, lost = fakes.user_session(admin), fakes.user_session(admin)
    store(lost).delete(lost)  # deleted some other way: an operator, clearsessions

    listed = signins.sessions_of(admin)

    assert [s.id for s in listed] == [signins.public_id(kept)]
    assert not UserSession.objects.filter(pk=lost).exists()


def test_an_expired_row_is_neither_listed_nor_found(engine):
    admin = fakes.make_user("admin")
    key = fakes.user_session(admin)
    UserSession.objects.filter(pk=key).update(expires_at=timezone.now())
    assert signins.sessions_of(admin) == []
    assert signins.find(admin, signins.public_id(key)) is None
    assert signins.keys_of(admin) == []


def test_ending_a_session_the_store_no_longer_has_counts_nothing_and_drops_the_row(engine):
    admin = fakes.make_user("admin")
    key = fakes.user_session(admin)
    store(key).delete(key)
    assert signins.end_many([key]) == 0
    assert not UserSession.objects.filter(pk=key).exists()


# --- the app's checks and the upgrade from the columns on accounts.Session ---------------


def test_without_its_middleware_the_app_fails_the_check(settings):
    entry = "accounts.usersessions.middleware.UserSessionMiddleware"
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != entry]
    (error,) = check_middleware()
    assert error.id == "usersessions.E001"
    assert entry in error.hint


def test_its_middleware_before_the_session_fails_the_check(settings):
    entry = "accounts.usersessions.middleware.UserSessionMiddleware"
    settings.MIDDLEWARE = [entry, *[m for m in settings.MIDDLEWARE if m != entry]]
    (error,) = check_middleware()
    assert error.id == "usersessions.E001"


def test_the_demo_settings_pass_the_check():
    assert check_middleware() == []


@pytest.mark.django_db(transaction=True)
def test_the_upgrade_keeps_every_session_and_its_browser():
    """A database at the schema before this app (accounts 0006: the columns on
    accounts.Session) migrates forward with every session signed in still, and the
    sessions page still knows each browser."""
    from accounts.sessions import SessionStore

    call_command("migrate", "usersessions", "zero", verbosity=0)
    call_command("migrate", "accounts", "0006", verbosity=0)
    try:
        user = fakes.make_user("admin")
        now = timezone.now()
        data = SessionStore().encode({SESSION_KEY: str(user.pk), "who": "é"})
        rows = [
            ("live1" + "0" * 27, now + timedelta(days=1), "Firefox 133 on Windows", "7", "cookies"),
            ("live2" + "0" * 27, now + timedelta(days=2), "Safari 17 on iPhone", "", "session"),
            ("dead1" + "0" * 27, now - timedelta(seconds=1), "Chrome", "9", "cookies"),
        ]
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO accounts_session (session_key, session_data, expire_date, user_id, "
                "signed_in_at, device, address, backend_sid, last_seen, token_storage) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (key, data, expires, user.pk, now - timedelta(hours=1), device, "ü.example",
                     sid, now, storage)
                    for key, expires, device, sid, storage in rows
                ],
            )
    finally:
        call_command("migrate", verbosity=0)

    copied = {
        row.session_key: (row.user_id, row.device, row.address, row.backend_sid, row.token_storage)
        for row in UserSession.objects.all()
    }
    assert copied == {
        "live1" + "0" * 27: (user.pk, "Firefox 133 on Windows", "ü.example", "7", "cookies"),
        "live2" + "0" * 27: (user.pk, "Safari 17 on iPhone", "ü.example", "", "session"),
    }
    for key, *_ in rows[:2]:
        assert SessionStore(session_key=key).load() == {SESSION_KEY: str(user.pk), "who": "é"}
    assert sorted(s.device for s in signins.sessions_of(user)) == [
        "Firefox 133 on Windows",
        "Safari 17 on iPhone",
    ]
    assert UserSession.objects.get(pk="live1" + "0" * 27).expires_at.tzinfo is not None
    assert datetime.now(UTC) < UserSession.objects.get(pk="live1" + "0" * 27).expires_at
