"""Sign-outs the backend missed: sealed, queued once, retried with back-off, delivered later."""

import contextlib
import dataclasses
import io
import logging
import sqlite3
import threading
from datetime import timedelta

import pytest
import requests
from cryptography.fernet import InvalidToken
from django.contrib.auth import SESSION_KEY
from django.core.management import call_command
from django.db import IntegrityError, OperationalError
from django.db.models import QuerySet
from django.utils import timezone

from accounts import revocations
from accounts.client import Tokens
from accounts.cookies import parse_set_cookie
from accounts.exceptions import BackendUnavailable
from accounts.models import PendingRevocation
from accounts.record import TokenRecord, token_hash
from authapi.demo import DEMO_USERS
from tests import fakes, flows
from tests.servers import reserve_port, running_app, running_authapi

ADMIN = DEMO_USERS[0]
QUEUED = (
    "Signed out here. The sign-in service could not be reached; "
    "it will be told as soon as it answers."
)
ACCESS, REFRESH = "access-secret-value", "refresh-secret-value"


def record_for(refresh: str | None = REFRESH, *, max_age: int | None = 604800) -> TokenRecord:
    cookies = []
    if refresh is not None and max_age is not None:
        cookies.append(parse_set_cookie(fakes.express_cookie("refresh_token", refresh, max_age)))
    return TokenRecord.issue(user_id="1", access=ACCESS, refresh=refresh or "", cookies=cookies)


def queue_row(*, due: bool = True, expires_in: float = 3600, **tokens) -> PendingRevocation:
    """Queue a revocation and make it due now (or not)."""
    pair = Tokens(**(tokens or {"access": ACCESS, "refresh": REFRESH}))
    record = record_for(pair.refresh or "unused")
    assert revocations.queue(pair, record=record, error=BackendUnavailable("POST /auth/logout"))
    row = PendingRevocation.objects.get()
    now = timezone.now()
    row.next_attempt_at = now - timedelta(seconds=1) if due else now + timedelta(seconds=60)
    row.expires_at = now + timedelta(seconds=expires_in)
    row.save()
    return row


# --- sealing --------------------------------------------------------------------------


def test_seal_round_trips_and_holds_no_readable_token():
    sealed = revocations.seal(Tokens(access=ACCESS, refresh=REFRESH))
    assert ACCESS not in sealed and REFRESH not in sealed
    assert revocations.unseal(sealed) == Tokens(access=ACCESS, refresh=REFRESH)


def test_rows_sealed_before_a_key_rotation_open_with_the_fallback(settings):
    settings.SECRET_KEY = "old-secret-key-" + "x" * 40
    sealed = revocations.seal(Tokens(refresh=REFRESH))
    settings.SECRET_KEY = "new-secret-key-" + "y" * 40
    with pytest.raises(InvalidToken):
        revocations.unseal(sealed)
    settings.SECRET_KEY_FALLBACKS = ["old-secret-key-" + "x" * 40]
    assert revocations.unseal(sealed).refresh == REFRESH


def test_back_off_doubles_from_thirty_seconds_and_stops_at_the_cap(settings):
    settings.AUTH_REVOCATION_MAX_BACKOFF = 200
    assert [revocations.backoff(n) for n in (1, 2, 3, 4, 5)] == [30, 60, 120, 200, 200]
    assert revocations.backoff(10_000) == 200


# --- queueing -----------------------------------------------------------------------------


def test_a_token_is_queued_once_sealed_until_its_own_expiry(db):
    record = record_for(max_age=3600)
    error = BackendUnavailable("POST /auth/logout: ConnectionError")
    before = timezone.now()

    pair = Tokens(access=ACCESS, refresh=REFRESH)
    assert revocations.queue(pair, record=record, error=error)
    assert revocations.queue(pair, record=record, error=error)

    row = PendingRevocation.objects.get()
    assert row.token_hash == token_hash(REFRESH)
    assert row.backend_user_id == "1"
    assert REFRESH not in row.sealed and ACCESS not in row.sealed
    assert abs(row.expires_at.timestamp() - record.refresh_expires_at) < 1
    assert 29 <= (row.next_attempt_at - before).total_seconds() <= 31
    assert row.attempts == 1
    assert row.last_error == "BackendUnavailable: POST /auth/logout: ConnectionError"


def test_a_token_queued_before_a_key_rotation_is_not_queued_again(db, settings):
    settings.SECRET_KEY = "old-secret-key-" + "x" * 40
    queue_row()
    settings.SECRET_KEY = "new-secret-key-" + "y" * 40
    settings.SECRET_KEY_FALLBACKS = ["old-secret-key-" + "x" * 40]
    pair = Tokens(access=ACCESS, refresh=REFRESH)
    assert revocations.queue(pair, record=record_for(), error=BackendUnavailable("x"))
    assert PendingRevocation.objects.count() == 1


def test_without_a_known_expiry_the_row_is_kept_seven_days(db):
    pair = Tokens(access=ACCESS, refresh=REFRESH)
    assert revocations.queue(pair, record=record_for(max_age=None), error=BackendUnavailable("x"))
    kept = PendingRevocation.objects.get().expires_at - timezone.now()
    assert timedelta(days=7) - timedelta(seconds=5) < kept <= timedelta(days=7)


def test_nothing_is_queued_without_the_sessions_record(db):
    pair = Tokens(access=ACCESS, refresh=REFRESH)
    assert not revocations.queue(pair, record=None, error=BackendUnavailable("x"))
    assert not PendingRevocation.objects.exists()


# --- claiming and retrying ---------------------------------------------------------------


def test_of_two_workers_that_read_a_due_row_only_one_claims_it(db):
    queue_row()
    mine, theirs = PendingRevocation.objects.get(), PendingRevocation.objects.get()
    assert revocations.claim(mine)
    assert not revocations.claim(theirs)
    leased = PendingRevocation.objects.get().next_attempt_at - timezone.now()
    assert timedelta(seconds=30) < leased <= timedelta(seconds=revocations.lease_seconds())


def test_a_due_row_is_delivered_with_its_tokens_and_removed(db, backend):
    queue_row()
    logout = fakes.stub_logout(backend)

    counts = revocations.retry(due_only=True, stop_when_down=True)

    assert (counts.delivered, counts.failed, counts.expired) == (1, 0, 0)
    assert logout.calls[0].request.headers["Cookie"] == (
        f"access_token={ACCESS}; refresh_token={REFRESH}"
    )
    assert not PendingRevocation.objects.exists()


def test_a_401_means_the_token_is_already_dead_there_and_counts_as_delivered(db, backend):
    queue_row()
    backend.post(f"{fakes.BASE}/auth/logout", status=401, json={"message": "Unauthorized"})
    assert revocations.retry(due_only=True, stop_when_down=True).delivered == 1
    assert not PendingRevocation.objects.exists()


def test_a_failed_attempt_backs_off_and_records_the_error(db, backend):
    queue_row()
    backend.post(f"{fakes.BASE}/auth/logout", body=fakes.connection_refused())
    before = timezone.now()

    counts = revocations.retry(due_only=True, stop_when_down=True)

    assert (counts.delivered, counts.failed) == (0, 1)
    row = PendingRevocation.objects.get()
    assert row.attempts == 2
    assert 59 <= (row.next_attempt_at - before).total_seconds() <= 61
    assert row.last_error == "BackendUnavailable: POST /auth/logout: ConnectionError"


def test_a_throttled_attempt_waits_at_least_what_the_backend_asks(db, backend):
    queue_row()
    backend.post(f"{fakes.BASE}/auth/logout", status=429, headers={"Retry-After": "900"})
    revocations.retry(due_only=True, stop_when_down=True)
    row = PendingRevocation.objects.get()
    assert (row.next_attempt_at - timezone.now()).total_seconds() > 890
    assert row.last_error.startswith("Throttled:")


def test_rows_past_their_expiry_are_deleted_unsent(db, backend):
    queue_row(expires_in=-1)
    counts = revocations.retry(due_only=False, stop_when_down=False)
    assert (counts.expired, counts.delivered) == (1, 0)
    assert not PendingRevocation.objects.exists()
    assert len(backend.calls) == 0


def test_due_only_leaves_rows_that_are_not_due(db, backend):
    queue_row(due=False)
    counts = revocations.retry(due_only=True, stop_when_down=True)
    assert (counts.delivered, counts.failed, counts.skipped) == (0, 0, 0)
    assert len(backend.calls) == 0
    assert PendingRevocation.objects.get().attempts == 1


def test_a_run_that_finds_the_backend_down_stops_there(db, backend):
    for refresh in ("r-1", "r-2", "r-3"):
        revocations.queue(
            Tokens(refresh=refresh), record=record_for(refresh), error=BackendUnavailable("x")
        )
    PendingRevocation.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    backend.post(f"{fakes.BASE}/auth/logout", body=fakes.connection_refused())

    counts = revocations.retry(due_only=True, stop_when_down=True)

    assert (counts.failed, counts.skipped) == (1, 2)
    assert len(backend.calls) == 1
    assert sorted(PendingRevocation.objects.values_list("attempts", flat=True)) == [1, 1, 2]


def test_a_row_no_key_opens_is_dropped(db, backend, settings):
    queue_row()
    settings.SECRET_KEY = "another-secret-key-" + "z" * 40
    counts = revocations.retry(due_only=True, stop_when_down=True)
    assert counts.unreadable == 1
    assert not PendingRevocation.objects.exists()
    assert len(backend.calls) == 0


# --- the management command ------------------------------------------------------------


def test_the_command_shows_the_queue_without_any_token(db):
    queue_row(due=False)
    out = io.StringIO()
    call_command("revocations", stdout=out)
    text = out.getvalue()
    assert text.startswith("1 pending revocation, 0 due\n")
    assert "backend user 1: queued " in text
    assert "attempts 1" in text
    assert "last error: BackendUnavailable: POST /auth/logout" in text
    assert ACCESS not in text and REFRESH not in text
    assert PendingRevocation.objects.get().sealed not in text


def test_flush_sends_rows_that_are_not_due_yet_and_counts(db, backend):
    queue_row(due=False)
    fakes.stub_logout(backend)
    out = io.StringIO()
    call_command("revocations", "--flush", stdout=out)
    assert out.getvalue() == "delivered 1, failed 0, expired 0\n"
    assert not PendingRevocation.objects.exists()


def test_due_sends_nothing_early(db, backend):
    queue_row(due=False)
    out = io.StringIO()
    call_command("revocations", "--due", stdout=out)
    assert out.getvalue() == "delivered 0, failed 0, expired 0\n"
    assert len(backend.calls) == 0


# --- the sign-out view ----------------------------------------------------------------------


@pytest.fixture
def as_admin(client, db):
    return fakes.sign_in_client(client, "admin", access=ACCESS, refresh=REFRESH)


def test_sign_out_with_the_backend_down_ends_here_and_queues(as_admin, backend):
    backend.post(f"{fakes.BASE}/auth/logout", body=fakes.connection_refused())

    response = as_admin.post("/accounts/logout/")

    assert response.status_code == 302
    assert SESSION_KEY not in as_admin.session
    assert response.cookies["refresh_token"].value == ""
    assert PendingRevocation.objects.get().token_hash == token_hash(REFRESH)
    assert QUEUED in as_admin.get("/").content.decode()


def test_a_call_that_may_have_been_processed_is_queued_too(as_admin, backend):
    backend.post(f"{fakes.BASE}/auth/logout", status=504)
    as_admin.post("/accounts/logout/")
    assert PendingRevocation.objects.count() == 1


def test_scripts_get_the_message_in_json(as_admin, backend):
    backend.post(f"{fakes.BASE}/auth/logout", body=requests.ReadTimeout())
    response = as_admin.post("/accounts/logout/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "revocation": "queued", "message": QUEUED}
    assert SESSION_KEY not in as_admin.session


@pytest.mark.parametrize("status", [200, 401])
def test_a_backend_that_answers_leaves_nothing_to_queue(as_admin, backend, status):
    backend.post(f"{fakes.BASE}/auth/logout", status=status, json={})
    response = as_admin.post("/accounts/logout/", HTTP_ACCEPT="application/json")
    assert response.json()["revocation"] == "done"
    assert not PendingRevocation.objects.exists()
    assert "You have been signed out." in as_admin.get("/").content.decode()


# --- the in-process retry after a response -------------------------------------------------


@pytest.fixture
def background(monkeypatch, settings):
    """Record background runs instead of starting threads; a fresh look schedule."""
    settings.AUTH_REVOCATION_RETRY_INTERVAL = 30
    monkeypatch.setattr(revocations, "_next_look", 0.0)
    monkeypatch.setattr(revocations, "_running", False)
    started = []
    monkeypatch.setattr(revocations, "_start_background", lambda: started.append(1))
    return started


def test_a_response_with_due_rows_starts_one_background_run(db, background):
    queue_row()
    revocations.retry_soon(sender=None)
    revocations.retry_soon(sender=None)  # within the interval: no second look
    assert background == [1]


def test_no_run_without_due_rows_or_when_switched_off(db, background, settings):
    queue_row(due=False)
    revocations.retry_soon(sender=None)
    assert background == []
    PendingRevocation.objects.update(next_attempt_at=timezone.now())
    settings.AUTH_REVOCATION_RETRY_INTERVAL = 0
    revocations._next_look = 0.0
    revocations.retry_soon(sender=None)
    assert background == []


def test_the_look_happens_as_a_request_finishes(as_admin, background):
    queue_row()
    as_admin.get("/")
    assert background == [1]


def test_the_admin_lists_the_queue_read_only_without_tokens(client, db, background):
    queue_row(due=False)
    fakes.sign_in_client(client, "admin", access=fakes.access_jwt())
    page = client.get("/admin/accounts/pendingrevocation/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "BackendUnavailable: POST /auth/logout" in body
    assert REFRESH not in body and ACCESS not in body
    assert client.get("/admin/accounts/pendingrevocation/add/").status_code == 403


# --- over real HTTP: the reference API as its own process -----------------------------------


def _sign_in(client, settings, api_url: str) -> str:
    settings.API_BASEURL = api_url
    response = client.post("/accounts/login/", {"email": ADMIN.email, "password": ADMIN.password})
    assert response.status_code == 302
    return client.cookies["refresh_token"].value


def _refused(api_url: str, refresh: str) -> bool:
    direct = requests.post(
        f"{api_url}/auth/refresh", cookies={"refresh_token": refresh}, timeout=10
    )
    return direct.status_code == 401


def test_sign_out_with_the_api_down_is_delivered_when_it_is_back(client, db, settings, tmp_path):
    port = reserve_port()  # nothing else takes it while the API is down
    with running_authapi(tmp_path, port=port) as api:
        refresh = _sign_in(client, settings, api.url)
    # The API process is stopped now.

    response = client.post("/accounts/logout/")

    assert response.status_code == 302
    assert SESSION_KEY not in client.session
    assert QUEUED in client.get("/").content.decode()
    row = PendingRevocation.objects.get()
    assert row.token_hash == token_hash(refresh)
    assert refresh not in row.sealed
    assert not any(refresh in str(value) for value in PendingRevocation.objects.values().get())

    with running_authapi(tmp_path, port=port) as api:
        out = io.StringIO()
        call_command("revocations", "--flush", stdout=out)
        assert out.getvalue() == "delivered 1, failed 0, expired 0\n"
        assert not PendingRevocation.objects.exists()
        assert api.stats()["logout"] == 1
        assert _refused(api.url, refresh), "the old refresh token is revoked"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with running_authapi(tmp_path_factory.mktemp("revocations")) as server:
        yield server


def test_sign_out_with_the_api_up_queues_nothing(client, db, settings, api):
    refresh = _sign_in(client, settings, api.url)
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert not PendingRevocation.objects.exists()
    assert _refused(api.url, refresh)


def test_a_frozen_api_at_sign_out_gets_the_revocation_later(client, db, settings, api):
    refresh = _sign_in(client, settings, api.url)
    settings.AUTH_BACKEND_TIMEOUT = 0.5
    api.pause()
    try:
        response = client.post("/accounts/logout/", HTTP_ACCEPT="application/json")
    finally:
        api.resume()
    # The call may have reached the API (a read timeout): it is queued all the same.
    assert response.json()["revocation"] == "queued"
    settings.AUTH_BACKEND_TIMEOUT = 5
    out = io.StringIO()
    call_command("revocations", "--flush", stdout=out)
    assert out.getvalue() == "delivered 1, failed 0, expired 0\n"
    assert _refused(api.url, refresh)


def _rows(database) -> list[tuple]:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT token_hash, sealed FROM accounts_pendingrevocation").fetchall()


def test_a_worker_delivers_due_revocations_after_a_response(tmp_path):
    """Under gunicorn: a worker's background run, not a command, tells the API once it is back."""
    with contextlib.ExitStack() as app_stack:
        api_stack = contextlib.ExitStack()
        port = reserve_port()  # nothing else takes it while the API is down
        with api_stack:
            api = api_stack.enter_context(running_authapi(tmp_path, port=port))
            app = app_stack.enter_context(
                running_app(
                    tmp_path, api_url=api.url, workers=1, AUTH_REVOCATION_RETRY_INTERVAL="1"
                )
            )
            browser = flows.sign_in(app.url)
            refresh = browser.cookies.get("refresh_token")
        # The API is down now; the app is not.
        response = flows.sign_out(browser, app.url)
        assert response.status_code == 302
        assert QUEUED in browser.get(f"{app.url}/", timeout=10).text
        database = tmp_path / "app.sqlite3"
        [(_, sealed)] = _rows(database)
        assert refresh not in sealed

        with running_authapi(tmp_path, port=port) as api:
            # Let time pass: the row is due now.
            with sqlite3.connect(database) as db:
                db.execute(
                    "UPDATE accounts_pendingrevocation SET next_attempt_at = '2000-01-01 00:00:00'"
                )

            def delivered():
                requests.get(f"{app.url}/", timeout=10)
                return not _rows(database)

            flows.wait_for(delivered, timeout=20, interval=0.3, what="the background delivery")
            assert api.stats()["logout"] == 1
            assert _refused(api.url, refresh)
        assert refresh not in app.log()


# --- queueing, retrying and the background run in detail -----------------------------------


def frozen_now(monkeypatch):
    """Stop `timezone.now()` as accounts/revocations.py reads it; return the moment."""
    now = timezone.now()
    monkeypatch.setattr(revocations.timezone, "now", lambda: now)
    return now


def test_an_access_token_alone_is_kept_until_its_own_expiry(db):
    record = dataclasses.replace(record_for(), access_expires_at=timezone.now().timestamp() + 600)
    pair = Tokens(access=ACCESS)
    assert revocations.queue(pair, record=record, error=BackendUnavailable("x"))
    row = PendingRevocation.objects.get()
    assert row.token_hash == token_hash(ACCESS)
    assert abs(row.expires_at.timestamp() - record.access_expires_at) < 1


def test_a_token_expiring_as_it_is_queued_is_not_queued_and_the_log_says_so(
    db, monkeypatch, caplog
):
    now = frozen_now(monkeypatch)
    record = dataclasses.replace(record_for(), refresh_expires_at=now.timestamp())
    with caplog.at_level(logging.INFO, logger="accounts.revocations"):
        queued = revocations.queue(
            Tokens(refresh=REFRESH), record=record, error=BackendUnavailable("x")
        )
    assert queued is False
    assert not PendingRevocation.objects.exists()
    assert caplog.messages == ["Sign-out of backend user 1 not queued: the token has expired"]


def test_queueing_says_whose_sign_out_waits_for_the_backend(db, caplog):
    with caplog.at_level(logging.INFO, logger="accounts.revocations"):
        queue_row()
    assert caplog.messages == ["Sign-out of backend user 1 queued for the backend"]


def test_queueing_needs_no_secret_key_fallbacks_setting(db, settings):
    del settings.SECRET_KEY_FALLBACKS
    assert revocations.queue(
        Tokens(refresh=REFRESH), record=record_for(), error=BackendUnavailable("x")
    )
    assert PendingRevocation.objects.count() == 1


def test_a_long_backend_user_id_and_error_fit_their_columns(db):
    record = dataclasses.replace(record_for(), user_id="u" * 300)
    error = BackendUnavailable("POST /auth/logout: " + "e" * 300)
    assert revocations.queue(Tokens(refresh=REFRESH), record=record, error=error)
    row = PendingRevocation.objects.get()
    assert row.backend_user_id == "u" * 128
    assert row.last_error == ("BackendUnavailable: POST /auth/logout: " + "e" * 300)[:200]


def test_a_sign_out_queued_by_another_worker_meanwhile_counts_as_queued(db, monkeypatch):
    queue_row()
    # The other worker's row appears between this one's look and its insert.
    monkeypatch.setattr(QuerySet, "exists", lambda self: False)
    pair = Tokens(access=ACCESS, refresh=REFRESH)
    assert revocations.queue(pair, record=record_for(), error=BackendUnavailable("x")) is True
    assert PendingRevocation.objects.count() == 1


def test_a_queue_the_database_cannot_take_is_an_error_in_the_log(db, monkeypatch, caplog):
    def unreachable(self):
        raise OperationalError("database is locked")

    monkeypatch.setattr(QuerySet, "exists", unreachable)
    pair = Tokens(refresh=REFRESH)
    with caplog.at_level(logging.ERROR, logger="accounts.revocations"):
        assert revocations.queue(pair, record=record_for(), error=BackendUnavailable("x")) is False
    assert caplog.messages == ["Sign-out of backend user 1 could not be queued: database is locked"]


def test_an_integrity_error_is_not_mistaken_for_a_database_outage(db, monkeypatch):
    def conflict(**kwargs):
        raise IntegrityError("UNIQUE constraint failed: accounts_pendingrevocation.token_hash")

    monkeypatch.setattr(PendingRevocation.objects, "create", conflict)
    pair = Tokens(refresh=REFRESH)
    assert revocations.queue(pair, record=record_for(), error=BackendUnavailable("x")) is True


def test_a_claim_holds_the_row_for_both_timeouts_and_thirty_seconds(db, settings, monkeypatch):
    settings.AUTH_BACKEND_CONNECT_TIMEOUT = 2
    settings.AUTH_BACKEND_TIMEOUT = 7
    assert revocations.lease_seconds() == 39
    row = queue_row()
    now = frozen_now(monkeypatch)
    assert revocations.claim(row)
    assert PendingRevocation.objects.get().next_attempt_at == now + timedelta(seconds=39)


def test_a_row_expiring_as_it_is_attempted_is_dropped_unsent(db, backend, monkeypatch):
    row = queue_row()
    now = frozen_now(monkeypatch)
    row.expires_at = now
    row.save()
    assert revocations.attempt(row) == revocations.EXPIRED
    assert not PendingRevocation.objects.exists()
    assert len(backend.calls) == 0


def test_each_attempt_is_in_the_log_without_a_token(db, backend, settings, caplog):
    row = queue_row()
    backend.post(f"{fakes.BASE}/auth/logout", body=fakes.connection_refused())
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="accounts.revocations"):
        revocations.retry(due_only=True, stop_when_down=True)
        backend.replace("POST", f"{fakes.BASE}/auth/logout", json={})
        PendingRevocation.objects.update(next_attempt_at=timezone.now())
        revocations.retry(due_only=True, stop_when_down=True)
        unreadable = queue_row()
        settings.SECRET_KEY = "another-secret-key-" + "z" * 40
        revocations.retry(due_only=True, stop_when_down=True)
    assert caplog.messages == [
        f"Revocation {row.pk} failed again (POST /auth/logout: ConnectionError); next try in 60s",
        "Sign-out of backend user 1 delivered to the backend",
        "Sign-out of backend user 1 queued for the backend",
        f"Revocation {unreadable.pk} cannot be decrypted with SECRET_KEY; dropped",
    ]
    text = caplog.text
    assert ACCESS not in text and REFRESH not in text


def queue_rows(*refresh_tokens: str) -> list[PendingRevocation]:
    """Queue one due row per refresh token, in order; return them."""
    for refresh in refresh_tokens:
        revocations.queue(
            Tokens(refresh=refresh), record=record_for(refresh), error=BackendUnavailable("x")
        )
    PendingRevocation.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    return list(PendingRevocation.objects.order_by("pk"))


def sent_refresh_tokens(backend) -> list[str]:
    return [call.request.headers["Cookie"].split("refresh_token=")[1] for call in backend.calls]


def test_the_longest_due_row_is_sent_first(db, backend):
    first, second = queue_rows("r-1", "r-2")
    PendingRevocation.objects.filter(pk=second.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=60)
    )
    fakes.stub_logout(backend)
    revocations.retry(due_only=True, stop_when_down=True)
    assert sent_refresh_tokens(backend) == ["r-2", "r-1"]


def test_a_limited_run_sends_no_more_than_its_limit(db, backend):
    queue_rows("r-1", "r-2", "r-3")
    fakes.stub_logout(backend)
    counts = revocations.retry(due_only=True, stop_when_down=True, limit=2)
    assert counts.delivered == 2
    assert sent_refresh_tokens(backend) == ["r-1", "r-2"]
    assert PendingRevocation.objects.count() == 1


def claimed_elsewhere(monkeypatch, *rows: PendingRevocation) -> None:
    """Have another worker claim `rows` just before this run tries to."""
    real_claim = revocations.claim
    taken = {row.pk for row in rows}

    def claim(row):
        if row.pk in taken:
            PendingRevocation.objects.filter(pk=row.pk).update(
                next_attempt_at=timezone.now() + timedelta(seconds=60)
            )
        return real_claim(row)

    monkeypatch.setattr(revocations, "claim", claim)


def test_rows_another_worker_claimed_are_skipped_and_the_run_goes_on(db, backend, monkeypatch):
    first, second, third = queue_rows("r-1", "r-2", "r-3")
    claimed_elsewhere(monkeypatch, first, second)
    fakes.stub_logout(backend)
    counts = revocations.retry(due_only=True, stop_when_down=True)
    assert (counts.skipped, counts.delivered) == (2, 1)
    assert sent_refresh_tokens(backend) == ["r-3"]


def test_without_stopping_every_failure_is_counted(db, backend):
    queue_rows("r-1", "r-2", "r-3")
    backend.post(f"{fakes.BASE}/auth/logout", body=fakes.connection_refused())
    counts = revocations.retry(due_only=True, stop_when_down=False)
    assert (counts.failed, counts.skipped) == (3, 0)
    assert len(backend.calls) == 3


def test_a_run_stopping_at_the_backend_down_counts_what_it_left(db, backend, monkeypatch):
    first, *_ = queue_rows("r-1", "r-2", "r-3", "r-4")
    claimed_elsewhere(monkeypatch, first)
    backend.post(f"{fakes.BASE}/auth/logout", body=fakes.connection_refused())
    counts = revocations.retry(due_only=True, stop_when_down=True)
    assert (counts.skipped, counts.failed) == (3, 1)
    assert sent_refresh_tokens(backend) == ["r-2"]


class RecordedThread(threading.Thread):
    started: list["RecordedThread"] = []

    def start(self):
        RecordedThread.started.append(self)
        super().start()


@pytest.fixture
def no_run_yet(monkeypatch):
    monkeypatch.setattr(revocations, "_running", False)
    RecordedThread.started = []
    monkeypatch.setattr(revocations, "threading", type("threading", (), {"Thread": RecordedThread}))
    yield
    for thread in RecordedThread.started:
        thread.join(timeout=30)


def test_the_background_run_is_one_daemon_thread_at_a_time(transactional_db, backend, no_run_yet):
    queue_rows("r-1")
    gate = fakes.Gate()
    fakes.stub_held(backend, "POST", "/auth/logout", gate, body='{"ok": true}')
    revocations._start_background()
    gate.wait_entered()  # the first run is at the backend
    revocations._start_background()  # one is running: not another
    assert len(RecordedThread.started) == 1
    thread = RecordedThread.started[0]
    assert (thread.name, thread.daemon) == ("revocations", True)
    gate.open()
    thread.join(timeout=30)
    assert not PendingRevocation.objects.exists()
    assert revocations._running is False
    revocations._start_background()
    assert len(RecordedThread.started) == 2


def test_a_background_run_sends_only_due_rows_and_stops_at_a_down_backend(
    db, backend, no_run_yet, caplog
):
    queue_rows("r-1", "r-2", "r-3")
    PendingRevocation.objects.filter(pk=PendingRevocation.objects.last().pk).update(
        next_attempt_at=timezone.now() + timedelta(seconds=60)
    )
    backend.post(f"{fakes.BASE}/auth/logout", body=fakes.connection_refused())
    with caplog.at_level(logging.DEBUG, logger="accounts.revocations"):
        revocations._retry_in_background()
    assert sent_refresh_tokens(backend) == ["r-1"]
    assert caplog.messages[-1] == (
        "Background revocation run: "
        "Counts(delivered=0, failed=1, expired=0, unreadable=0, skipped=1)"
    )
    assert revocations._running is False


def test_a_background_run_sends_at_most_fifty_rows(db, backend, no_run_yet):
    queue_rows(*(f"r-{n}" for n in range(revocations.BACKGROUND_BATCH + 1)))
    fakes.stub_logout(backend)
    revocations._retry_in_background()
    assert len(backend.calls) == 50
    assert PendingRevocation.objects.count() == 1


def test_a_background_run_that_fails_says_so_and_lets_the_next_one_start(
    db, no_run_yet, monkeypatch, caplog
):
    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(revocations, "retry", broken)
    revocations._running = True
    with caplog.at_level(logging.ERROR, logger="accounts.revocations"):
        revocations._retry_in_background()
    assert caplog.messages == ["Background revocation run failed"]
    assert caplog.records[0].exc_info[0] is RuntimeError
    assert revocations._running is False


@pytest.mark.parametrize(("open_before", "closed_after"), [(False, True), (True, False)])
def test_the_look_closes_only_a_connection_it_opened(db, monkeypatch, open_before, closed_after):
    """request_finished has closed the request's connection unless it is persistent."""
    closed = []
    handle = object() if open_before else None
    monkeypatch.setattr(
        revocations,
        "connection",
        type("Connection", (), {"connection": handle, "close": lambda self: closed.append(1)})(),
    )
    queue_row()
    assert revocations._any_due() is True
    assert bool(closed) is closed_after
