"""`TokenState` (accounts/state.py): the session decides, refreshes and revalidates.

Through the test client with the real MIDDLEWARE order, and directly on a
RequestFactory request with a real session where a branch is easier to reach.
"""

import functools
import logging
import threading
import time
import types
from concurrent.futures import wait
from dataclasses import replace

import pytest
import responses
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.models import AnonymousUser
from django.http import HttpResponse
from django.test import Client

from accounts import checking, delivery, refresh, renewal, signals, vault
from accounts.client import Tokens
from accounts.cookies import BackendCookie
from accounts.exceptions import BackendUnavailable, RefreshPending, SessionEnded
from accounts.models import UserProfile
from accounts.reasons import Reason
from accounts.record import SESSION_KEY as RECORD_KEY
from accounts.record import TokenRecord, token_hash
from accounts.state import TokenState
from tests import fakes
from tests.fakes import assert_signed_out, calls_to, edit_record, record_of

pytestmark = pytest.mark.usefixtures("settle")
ADMIN = UserProfile(
    id="1", email="admin@example.com", first_name="Ada", last_name="Admin", roles=("admin",)
)
# A request whose view calls the backend: it waits for a refresh the middleware started.
NEEDS_TOKEN = "/api/users/me"
FORGED = fakes.jwt.encode({"sub": "1", "exp": 4102444800}, None, algorithm="none")


@pytest.fixture(autouse=True)
def short_timings(settings):
    settings.AUTH_REFRESH_WAIT = 3.0
    settings.AUTH_REFRESH_LOCK_TTL = 1
    settings.AUTH_REVALIDATE_INTERVAL = 300


def issued() -> TokenRecord:
    return TokenRecord.issue(user_id="1", access="acc-1", refresh="refresh-1", cookies=[])


def due_but_valid() -> TokenRecord:
    """Issued for 30 min with 30 s left: inside the 60 s leeway, not expired."""
    return replace(issued(), access_expires_at=time.time() + 30, access_lifetime=1800)


def sent_refresh_tokens(rsps) -> list[str]:
    return [fakes.sent_cookie(c, "refresh_token") for c in calls_to(rsps, "/auth/refresh")]


class TestCheck:
    """Invariant 2: cookies that are not the session's own pair end the session."""

    @pytest.mark.parametrize(
        ("cookies", "reason"),
        [
            ({"access_token": FORGED, "refresh_token": "refresh-1"}, "foreign_cookies"),
            ({"access_token": "eyJ.eyJ.sig", "refresh_token": "refresh-1"}, "foreign_cookies"),
            ({"access_token": "acc-1", "refresh_token": "refresh-0"}, "foreign_cookies"),
            ({"access_token": "acc-1"}, "half_pair"),
            ({}, "no_tokens"),
        ],
        ids=["forged-alg-none", "garbage", "unknown-refresh", "half-pair", "no-cookies"],
    )
    def test_foreign_cookies_end_the_session(self, signed_in, backend, caplog, cookies, reason):
        client = signed_in(access="acc-1")
        for name in ("access_token", "refresh_token"):
            if name in cookies:
                client.cookies[name] = cookies[name]
            else:
                del client.cookies[name]

        response = client.get("/api/users/me")

        assert response.status_code == 401
        assert response.json() == {
            "ok": False,
            "error": "signed_out",
            "message": "Your session has ended; please sign in again.",
        }
        assert SESSION_KEY not in client.session
        assert f"Session of backend user 1 ended: {reason}" in caplog.messages
        assert len(backend.calls) == 0

    def test_another_users_pair_ends_the_session(self, signed_in, backend, db):
        other = fakes.sign_in_client(Client(), "evaluator", access="acc-e", refresh="refresh-e")
        client = signed_in(access="acc-1")
        for name in ("access_token", "refresh_token"):
            client.cookies[name] = other.cookies[name].value
        assert_signed_out(client, client.get("/dashboard/"))

    def test_a_session_without_its_record_ends(self, signed_in, backend, caplog):
        client = signed_in(access="acc-1")
        session = client.session
        del session["_auth_token_record"]
        session.save()
        assert_signed_out(client, client.get("/dashboard/"))
        assert "Session of backend user 1 ended: no_record" in caplog.messages

    def test_a_missing_access_cookie_is_refreshed_for_a_backend_call(self, signed_in, backend):
        client = signed_in(access="acc-1")
        del client.cookies["access_token"]
        fakes.stub_refresh(backend, access="acc-2", refresh="refresh-2")
        fakes.stub_me_by_token(backend, {"acc-2": "admin"})
        response = client.get("/api/users/me")
        assert response.status_code == 200
        assert response.cookies["refresh_token"].value == "refresh-2"
        assert sent_refresh_tokens(backend) == ["refresh-1"]
        # The proxied call waited for the new token: never sent without one.
        sent = [fakes.sent_token(c.request) for c in calls_to(backend, "/users/me")]
        assert sent and set(sent) == {"acc-2"}
        assert SESSION_KEY in client.session

    def test_a_missing_access_cookie_starts_the_refresh_before_the_view(
        self, signed_in, backend, gates, settle, settings
    ):
        """Started before the view (which makes no backend call and does not wait for
        it), collected by the next request."""
        settings.AUTH_REFRESH_WAIT = 30.0  # were the view to wait, the gate's limit ends it
        client = signed_in(access="acc-1")
        del client.cookies["access_token"]
        gate = gates(limit=5)
        fakes.stub_held_refresh(backend, gate, access="acc-2")
        fakes.stub_me(backend)

        first = client.get("/dashboard/")

        assert first.status_code == 200
        assert "refresh_token" not in first.cookies
        gate.wait_entered()  # begun, though nothing in the request needed the token
        gate.open()
        wait(settle, timeout=5)
        second = client.get("/dashboard/")
        assert second.cookies["refresh_token"].value == "refresh-2"
        assert second.cookies["access_token"].value == "acc-2"
        assert sent_refresh_tokens(backend) == ["refresh-1"]

    def test_the_sessions_own_pair_passes_without_a_call(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt())
        response = client.get("/dashboard/")
        assert response.status_code == 200
        assert len(backend.calls) == 0
        assert "access_token" not in response.cookies


class TestWhenToRefresh:
    def test_the_recorded_expiry_decides_not_the_cookies_claims(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=1800))
        edit_record(client, access_expires_at=time.time() - 5)
        fakes.stub_refresh(backend)
        fakes.stub_me(backend)
        assert client.get(NEEDS_TOKEN).status_code == 200
        assert len(calls_to(backend, "/auth/refresh")) == 1

    def test_an_expired_claim_in_a_recorded_fresh_token_changes_nothing(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=-60))
        edit_record(client, access_expires_at=time.time() + 900, access_lifetime=1800)
        assert client.get("/dashboard/").status_code == 200
        assert len(backend.calls) == 0

    def test_early_refresh_does_not_wait_and_the_next_request_collects(
        self, signed_in, backend, gates, settle, settings
    ):
        settings.AUTH_REFRESH_WAIT = 5.0
        old = fakes.access_jwt(ttl=30)
        new = fakes.access_jwt(ttl=1800)
        client = signed_in(access=old)
        # Issued for 30 min, 30 s left: valid, inside the 60 s leeway.
        edit_record(client, access_expires_at=time.time() + 30, access_lifetime=1800)
        gate = gates()
        fakes.stub_held_refresh(backend, gate, access=new)
        fakes.stub_me_by_token(backend, {old: "admin", new: "admin"})

        started = time.monotonic()
        first = client.get("/api/users/me")
        assert time.monotonic() - started < 2.5, "served without waiting for the refresh"
        assert first.status_code == 200
        assert fakes.sent_cookie(calls_to(backend, "/users/me")[0], "access_token") == old
        assert "access_token" not in first.cookies

        gate.wait_entered()
        gate.open()
        wait(settle, timeout=5)
        second = client.get("/dashboard/")

        assert second.cookies["access_token"].value == new
        assert second.cookies["refresh_token"].value == "refresh-2"
        assert len(calls_to(backend, "/auth/refresh")) == 1
        assert record_of(client).refresh_hash == token_hash("refresh-2")

    def test_an_expired_token_waits_one_budget_at_its_backend_call(
        self, signed_in, backend, gates, settings, monkeypatch
    ):
        settings.AUTH_REFRESH_WAIT = 0.5
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        gate = gates()
        fakes.stub_held_refresh(backend, gate)
        waits, outcome = [], refresh.outcome

        def counted(*args, deadline, **kwargs):
            waits.append((deadline, time.monotonic()))
            return outcome(*args, deadline=deadline, **kwargs)

        monkeypatch.setattr(refresh, "outcome", counted)
        response = client.get("/api/users/me")

        assert response.status_code == 503
        assert response.json()["error"] == "backend_unavailable"
        assert SESSION_KEY in client.session
        deadlines = [deadline for deadline, _ in waits]
        assert deadlines[0] is None, "before the view the refresh is only started"
        assert len({d for d in deadlines if d is not None}) == 1, "one budget in all"
        assert gate.calls == 1


class TestRenew:
    def test_a_pair_that_expired_uncollected_renews_its_successor(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        fakes.stub_refresh(backend, access=fakes.access_jwt(ttl=-5), refresh="refresh-2")
        fakes.stub_refresh(backend, refresh="refresh-3")
        fakes.stub_me(backend)
        response = client.get(NEEDS_TOKEN)
        assert response.status_code == 200
        assert sent_refresh_tokens(backend) == ["refresh-1", "refresh-2"]
        assert response.cookies["refresh_token"].value == "refresh-3"

    def test_an_access_token_with_a_second_to_live_is_not_handed_out(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        backend.post(
            f"{fakes.BASE}/auth/refresh",
            headers=[
                ("Set-Cookie", "access_token=opaque-2; Max-Age=1; Path=/"),
                ("Set-Cookie", fakes.express_cookie("refresh_token", "refresh-2", 3600)),
            ],
        )
        fakes.stub_refresh(backend, refresh="refresh-3")
        fakes.stub_me(backend)
        response = client.get(NEEDS_TOKEN)
        assert sent_refresh_tokens(backend) == ["refresh-1", "refresh-2"]
        assert response.cookies["refresh_token"].value == "refresh-3"

    def test_a_non_rotating_backend_moves_to_the_next_round(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        fakes.stub_refresh(backend, access=fakes.access_jwt(ttl=-5), refresh="refresh-1")
        fakes.stub_refresh(backend, access=fakes.access_jwt(ttl=1800), refresh="refresh-1")
        fakes.stub_me(backend)
        assert client.get(NEEDS_TOKEN).status_code == 200
        assert sent_refresh_tokens(backend) == ["refresh-1", "refresh-1"]
        assert record_of(client).round == 2

    def test_an_access_only_answer_keeps_the_refresh_cookie(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        new = fakes.access_jwt()
        backend.post(
            f"{fakes.BASE}/auth/refresh",
            headers=[("Set-Cookie", fakes.express_cookie("access_token", new, 1800))],
        )
        fakes.stub_me(backend)
        response = client.get(NEEDS_TOKEN)
        assert set(response.cookies) & {"access_token", "refresh_token"} == {"access_token"}
        record = record_of(client)
        assert (record.refresh_hash, record.round) == (token_hash("refresh-1"), 1)
        assert record.access_hash == token_hash(new)

    def test_never_more_than_a_short_chain(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        for n in range(2, 8):
            fakes.stub_refresh(backend, access=fakes.access_jwt(ttl=-5), refresh=f"refresh-{n}")
        assert client.get("/api/users/me").status_code == 503
        assert len(calls_to(backend, "/auth/refresh")) == 4
        assert SESSION_KEY in client.session

    @pytest.mark.parametrize(
        ("answer", "reason"),
        [({"status": 401}, "refused"), ({"status": 504}, "unknown_outcome")],
    )
    def test_a_refused_or_unknown_refresh_ends_the_session(
        self, signed_in, backend, caplog, gates, settle, answer, reason
    ):
        """A page that needs no backend call is served while the refresh runs; the
        next request meets its outcome."""
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        gate = gates()
        fakes.stub_held(backend, "POST", "/auth/refresh", gate, **answer)
        assert client.get("/dashboard/").status_code == 200
        gate.open()
        wait(settle, timeout=5)
        assert_signed_out(client, client.get("/dashboard/"))
        assert f"Session of backend user 1 ended: {reason}" in caplog.messages

    def test_a_refused_refresh_ends_the_session_of_a_page_that_needs_the_token(
        self, signed_in, backend, caplog
    ):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        fakes.stub_refresh(backend, status=401)
        response = client.get(NEEDS_TOKEN)
        assert response.status_code == 401
        assert response.json()["error"] == "signed_out"
        assert SESSION_KEY not in client.session
        assert "Session of backend user 1 ended: refused" in caplog.messages


class TestLateTab:
    def refreshed(self, client, backend, *, rounds=1):
        for n in range(2, 2 + rounds):
            fakes.stub_refresh(backend, refresh=f"refresh-{n}")
        fakes.stub_me(backend)
        for _ in range(rounds):
            edit_record(client, access_expires_at=time.time() - 1)
            client.get(NEEDS_TOKEN)
        return client.cookies["access_token"].value

    @pytest.mark.parametrize("rounds", [1, 3])
    def test_an_older_pair_gets_the_current_one(self, signed_in, backend, rounds):
        old = fakes.access_jwt()
        client = signed_in(access=old)
        current = self.refreshed(client, backend, rounds=rounds)
        client.cookies["access_token"], client.cookies["refresh_token"] = old, "refresh-1"

        response = client.get("/dashboard/")

        assert response.status_code == 200
        assert response.cookies["access_token"].value == current
        assert response.cookies["refresh_token"].value == f"refresh-{1 + rounds}"
        assert len(calls_to(backend, "/auth/refresh")) == rounds

    def test_an_older_pair_gets_the_current_one_after_the_grace_window_too(
        self, signed_in, backend, settings
    ):
        """The grace window is for other sessions; this session's own outcome is kept."""
        old = fakes.access_jwt()
        client = signed_in(access=old)
        current = self.refreshed(client, backend)
        settings.AUTH_REFRESH_GRACE = 0
        client.cookies["access_token"], client.cookies["refresh_token"] = old, "refresh-1"

        response = client.get("/dashboard/")

        assert response.status_code == 200
        assert response.cookies["access_token"].value == current
        assert response.cookies["refresh_token"].value == "refresh-2"

    def test_a_late_tab_then_refreshes_with_the_current_refresh_token(self, signed_in, backend):
        """The late tab's request carries on with the current pair: a 401 on its proxied
        call refreshes with the current refresh token, never the spent one."""
        old = fakes.access_jwt()
        client = signed_in(access=old)
        current = self.refreshed(client, backend)
        newest = fakes.access_jwt()
        backend.remove(responses.GET, f"{fakes.BASE}/users/me")
        fakes.stub_me_by_token(backend, {newest: "admin"})
        fakes.stub_refresh(backend, access=newest, refresh="refresh-3")
        client.cookies["access_token"], client.cookies["refresh_token"] = old, "refresh-1"

        response = client.get("/api/users/me")

        assert response.status_code == 200
        assert sent_refresh_tokens(backend) == ["refresh-1", "refresh-2"]
        # After the two of the first refresh (its profile read, the proxied call):
        proxied = [fakes.sent_token(c.request) for c in calls_to(backend, "/users/me")[2:]]
        assert proxied == [current, newest, newest]  # the current pair, then its successor
        assert response.cookies["refresh_token"].value == "refresh-3"

    def test_a_tab_more_rounds_behind_than_the_chain_limit_is_foreign(self, signed_in, backend):
        old = fakes.access_jwt()
        client = signed_in(access=old)
        self.refreshed(client, backend, rounds=checking.MAX_CHAIN + 1)
        client.cookies["access_token"], client.cookies["refresh_token"] = old, "refresh-1"
        assert_signed_out(client, client.get("/dashboard/"))

    def test_a_pair_collected_midway_through_a_chain_gets_the_current_one(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        midway = fakes.access_jwt(ttl=-5)
        fakes.stub_refresh(backend, access=midway, refresh="refresh-2")
        fakes.stub_refresh(backend, refresh="refresh-3")
        fakes.stub_me(backend)
        current = client.get(NEEDS_TOKEN).cookies["access_token"].value
        client.cookies["access_token"], client.cookies["refresh_token"] = midway, "refresh-2"

        response = client.get("/dashboard/")

        assert response.cookies["access_token"].value == current
        assert response.cookies["refresh_token"].value == "refresh-3"
        assert len(calls_to(backend, "/auth/refresh")) == 2

    def test_another_sessions_older_pair_is_foreign(self, signed_in, backend, db):
        other = fakes.sign_in_client(Client(), "admin", access="acc-o", refresh="refresh-o")
        fakes.stub_refresh(backend, refresh="refresh-o2")
        fakes.stub_me(backend)
        edit_record(other, access_expires_at=time.time() - 1)
        other.get(NEEDS_TOKEN)
        client = signed_in(access="acc-1")
        client.cookies["access_token"], client.cookies["refresh_token"] = "acc-o", "refresh-o"
        assert_signed_out(client, client.get("/dashboard/"))

    def test_a_non_rotating_backends_older_access_gets_the_current_one(self, signed_in, backend):
        old, new = fakes.access_jwt(ttl=-10), fakes.access_jwt()
        client = signed_in(access=old)
        fakes.stub_refresh(backend, access=new, refresh="refresh-1")
        fakes.stub_me(backend)
        client.get(NEEDS_TOKEN)
        client.cookies["access_token"] = old

        response = client.get("/dashboard/")

        assert response.status_code == 200
        assert response.cookies["access_token"].value == new
        assert "refresh_token" not in response.cookies
        assert SESSION_KEY in client.session
        assert len(calls_to(backend, "/auth/refresh")) == 1

    def test_a_non_rotating_backends_older_access_after_the_grace_window(
        self, signed_in, backend, settings
    ):
        old, new = fakes.access_jwt(ttl=-10), fakes.access_jwt()
        client = signed_in(access=old)
        fakes.stub_refresh(backend, access=new, refresh="refresh-1")
        fakes.stub_me(backend)
        client.get(NEEDS_TOKEN)
        settings.AUTH_REFRESH_GRACE = 0
        client.cookies["access_token"] = old

        response = client.get("/dashboard/")

        assert response.status_code == 200
        assert response.cookies["access_token"].value == new

    def test_a_non_rotating_backends_tab_one_round_behind_after_two_rounds(
        self, signed_in, backend
    ):
        """Rounds 0 -> 1 -> 2 on one refresh token: a tab holding round 1's access token
        gets round 2's (the outcome of round 1 replaced it)."""
        first, second, third = (fakes.access_jwt(ttl=t) for t in (-10, -5, 1800))
        client = signed_in(access=first)
        fakes.stub_refresh(backend, access=second, refresh="refresh-1")
        fakes.stub_refresh(backend, access=third, refresh="refresh-1")
        fakes.stub_me(backend)
        client.get(NEEDS_TOKEN)
        assert record_of(client).round == 2
        client.cookies["access_token"] = second

        response = client.get("/dashboard/")

        assert response.status_code == 200
        assert response.cookies["access_token"].value == third
        assert len(calls_to(backend, "/auth/refresh")) == 2

    def test_a_non_rotating_backends_late_tab_without_its_access_cookie_gets_the_current_one(
        self, signed_in, backend
    ):
        """The browser dropped the expired access cookie: no second refresh for that tab."""
        old, new = fakes.access_jwt(ttl=-10), fakes.access_jwt()
        client = signed_in(access=old)
        fakes.stub_refresh(backend, access=new, refresh="refresh-1")
        fakes.stub_me(backend)
        client.get(NEEDS_TOKEN)
        del client.cookies["access_token"]

        response = client.get("/dashboard/")

        assert response.status_code == 200
        assert response.cookies["access_token"].value == new
        assert len(calls_to(backend, "/auth/refresh")) == 1

    def test_a_missing_access_cookie_without_a_kept_outcome_is_refreshed(self, signed_in, backend):
        client = signed_in(access="acc-1")
        fakes.stub_refresh(backend, access=fakes.access_jwt(), refresh="refresh-2")
        fakes.stub_me(backend)
        del client.cookies["access_token"]

        response = client.get(NEEDS_TOKEN)

        assert response.status_code == 200
        assert response.cookies["refresh_token"].value == "refresh-2"
        assert len(calls_to(backend, "/auth/refresh")) == 1

    def test_an_older_access_without_a_kept_outcome_is_foreign(self, signed_in, backend):
        client = signed_in(access="acc-1")
        edit_record(client, round=1)  # a later round, but its outcome is gone
        client.cookies["access_token"] = "acc-0"
        assert_signed_out(client, client.get("/dashboard/"))

    @pytest.mark.parametrize("rotating", [True, False])
    def test_a_forged_access_beside_an_older_refresh_token_ends_the_session(
        self, signed_in, backend, rotating
    ):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        fakes.stub_refresh(backend, refresh="refresh-2" if rotating else "refresh-1")
        fakes.stub_me(backend)
        client.get(NEEDS_TOKEN)
        client.cookies["access_token"], client.cookies["refresh_token"] = FORGED, "refresh-1"
        assert_signed_out(client, client.get("/dashboard/"))


class TestLateTabOfABackendThatRotatesSometimes:
    """A backend that keeps its refresh token for some refreshes and rotates it on others
    (rotation by age): a late tab is moved on across both kinds of round."""

    def two_rounds(self, client, backend):
        """Round 0 of refresh-1 keeps it (acc 2), round 1 rotates it (acc 3, refresh-2)."""
        second, third = fakes.access_jwt(ttl=-5), fakes.access_jwt()
        fakes.stub_refresh(backend, access=second, refresh="refresh-1")
        fakes.stub_refresh(backend, access=third, refresh="refresh-2")
        fakes.stub_me(backend)
        client.get(NEEDS_TOKEN)
        assert (record_of(client).refresh_hash, record_of(client).round) == (
            token_hash("refresh-2"),
            0,
        )
        return second, third

    def test_a_tab_from_before_both_rounds_gets_the_current_pair(self, signed_in, backend, caplog):
        first = fakes.access_jwt(ttl=-10)
        client = signed_in(access=first)
        _, third = self.two_rounds(client, backend)
        client.cookies["access_token"], client.cookies["refresh_token"] = first, "refresh-1"
        with (
            fakes.heard(signals.refresh_result_served, "how", "waited") as heard,
            caplog.at_level(logging.DEBUG, logger="accounts.checking"),
        ):
            response = client.get("/dashboard/")

        assert response.status_code == 200
        assert response.cookies["access_token"].value == third
        assert response.cookies["refresh_token"].value == "refresh-2"
        assert len(calls_to(backend, "/auth/refresh")) == 2
        assert heard == [("shared", 0.0)]  # served another request's refresh, without waiting
        assert "An older pair of this session; sending it the current one" in caplog.messages

    def test_a_kept_chain_that_ends_elsewhere_than_the_sessions_pair_is_foreign(
        self, signed_in, backend
    ):
        """The chain leads to the session's refresh token, but not to its access token."""
        first = fakes.access_jwt(ttl=-10)
        client = signed_in(access=first)
        self.two_rounds(client, backend)
        edit_record(client, access_hash=token_hash("an access token issued since"))
        client.cookies["access_token"], client.cookies["refresh_token"] = first, "refresh-1"
        assert_signed_out(client, client.get("/dashboard/"))


class TestLateTabOfANonRotatingBackend:
    def test_is_served_the_kept_access_token_and_says_so(self, signed_in, backend):
        old, new = fakes.access_jwt(ttl=-10), fakes.access_jwt()
        client = signed_in(access=old)
        fakes.stub_refresh(backend, access=new, refresh="refresh-1")
        fakes.stub_me(backend)
        client.get(NEEDS_TOKEN)
        client.cookies["access_token"] = old
        with fakes.heard(signals.refresh_result_served, "how", "waited") as heard:
            response = client.get("/dashboard/")

        assert response.cookies["access_token"].value == new
        assert heard == [("shared", 0.0)]

    def test_then_refreshes_with_the_refresh_token_it_keeps(self, signed_in, backend):
        """Its proxied call, refused for the kept access token, refreshes with the one
        refresh token the backend keeps (the next round), and the call goes through."""
        old, kept, newest = fakes.access_jwt(ttl=-10), fakes.access_jwt(), fakes.access_jwt()
        client = signed_in(access=old)
        fakes.stub_refresh(backend, access=kept, refresh="refresh-1")
        fakes.stub_me(backend)
        client.get(NEEDS_TOKEN)
        backend.remove(responses.GET, f"{fakes.BASE}/users/me")
        fakes.stub_me_by_token(backend, {newest: "admin"})
        fakes.stub_refresh(backend, access=newest, refresh="refresh-1")
        client.cookies["access_token"] = old

        response = client.get("/api/users/me")

        assert response.status_code == 200
        assert sent_refresh_tokens(backend) == ["refresh-1", "refresh-1"]
        assert response.cookies["access_token"].value == newest

    def test_a_kept_access_token_that_is_no_longer_the_sessions_is_foreign(
        self, signed_in, backend
    ):
        old, new = fakes.access_jwt(ttl=-10), fakes.access_jwt()
        client = signed_in(access=old)
        fakes.stub_refresh(backend, access=new, refresh="refresh-1")
        fakes.stub_me(backend)
        client.get(NEEDS_TOKEN)
        edit_record(client, access_hash=token_hash("an access token issued since"))
        client.cookies["access_token"] = old
        assert_signed_out(client, client.get("/dashboard/"))


class TestNewerCookies:
    """The record lost a concurrent request's save: the session's own newer pair is adopted."""

    def advance_behind_the_sessions_back(self, client, backend, access="acc-2"):
        fakes.stub_refresh(backend, access=access, refresh="refresh-2")
        fakes.stub_me(backend)
        record = record_of(client)
        refresh.outcome(
            "refresh-1", binding=record.binding, keep_for=600, deadline=time.monotonic() + 3
        )
        client.cookies["access_token"], client.cookies["refresh_token"] = access, "refresh-2"
        return record

    def test_are_adopted_without_a_refresh(self, signed_in, backend):
        client = signed_in(access="acc-1")
        before = self.advance_behind_the_sessions_back(client, backend)
        assert client.get("/dashboard/").status_code == 200
        after = record_of(client)
        assert after.refresh_hash == token_hash("refresh-2")
        assert after.access_hash == token_hash("acc-2")
        assert after.generation == before.generation + 1
        assert after.round == 0
        assert len(calls_to(backend, "/auth/refresh")) == 1

    @pytest.mark.parametrize(
        ("steps", "round_after"),
        [
            # (token presented, its round, access issued, refresh issued)
            ([("refresh-1", 0, "acc-2", "refresh-1"), ("refresh-1", 1, "acc-3", "refresh-2")], 0),
            # The cookies' refresh token is the first step's, their access token the second's.
            ([("refresh-1", 0, "acc-2", "refresh-2"), ("refresh-2", 0, "acc-3", "refresh-2")], 1),
        ],
        ids=["kept-then-rotated", "rotated-then-kept"],
    )
    def test_two_rounds_ahead_across_a_kept_and_a_rotated_token_are_adopted(
        self, signed_in, backend, steps, round_after
    ):
        """The lost saves were a round that kept its refresh token and one that rotated it."""
        client = signed_in(access="acc-1")
        fakes.stub_me(backend)
        binding = record_of(client).binding
        for token, round_, access, issued in steps:
            fakes.stub_refresh(backend, access=access, refresh=issued)
            refresh.outcome(
                token, binding=binding, round_=round_, keep_for=600, deadline=time.monotonic() + 3
            )
        client.cookies["access_token"], client.cookies["refresh_token"] = "acc-3", "refresh-2"

        assert client.get("/dashboard/").status_code == 200
        after = record_of(client)
        assert (after.refresh_hash, after.access_hash, after.round) == (
            token_hash("refresh-2"),
            token_hash("acc-3"),
            round_after,
        )
        assert len(calls_to(backend, "/auth/refresh")) == 2

    def test_more_rounds_ahead_than_the_chain_limit_are_foreign(self, signed_in, backend):
        client = signed_in(access="acc-1")
        binding = record_of(client).binding
        last = checking.MAX_CHAIN + 2
        for n in range(2, last + 1):
            fakes.stub_refresh(backend, access=f"acc-{n}", refresh=f"refresh-{n}")
            refresh.outcome(
                f"refresh-{n - 1}", binding=binding, keep_for=600, deadline=time.monotonic() + 3
            )
        client.cookies["access_token"] = f"acc-{last}"
        client.cookies["refresh_token"] = f"refresh-{last}"
        assert_signed_out(client, client.get("/dashboard/"))

    def test_with_the_wrong_access_token_are_foreign(self, signed_in, backend):
        client = signed_in(access="acc-1")
        self.advance_behind_the_sessions_back(client, backend)
        client.cookies["access_token"] = "acc-forged"
        assert_signed_out(client, client.get("/dashboard/"))


class TestDirectly:
    """TokenState on a RequestFactory request with a real session, branch by branch."""

    @pytest.fixture
    def make(self, rf, db, locmem_cache, backend):
        return functools.partial(fakes.direct_request, rf)

    def store(self, request, record, sealed=None):
        """Save `record` (and a sealed pair) as another request of the same session would have."""
        other = type(request.session)(session_key=request.session.session_key)
        other[RECORD_KEY] = record.as_session_value()
        other[vault.SESSION_KEY] = sealed
        other.save()

    def test_one_state_per_request(self, make):
        request = make()
        state = TokenState.of(request)
        assert TokenState.of(request) is state is request.token_state
        assert state.incoming == Tokens(access="acc-1", refresh="refresh-1")

    @pytest.mark.parametrize(
        ("path", "applies"),
        [
            ("accounts.backends.AuthApiBackend", True),
            ("django.contrib.auth.backends.ModelBackend", False),
            ("no.such.Backend", False),
        ],
    )
    def test_applies_to_sign_ins_through_the_auth_api_only(self, make, path, applies):
        request = make(backend_path=path)
        assert TokenState(request).applies() is applies
        request.user = AnonymousUser()
        assert TokenState(request).applies() is False
        del request.user
        assert TokenState(request).applies() is False

    def test_check_accepts_the_own_pair_and_leaves_the_session_alone(self, make):
        request = make()
        state = TokenState.of(request)
        state.check()
        response = HttpResponse()
        state.finish(response)
        assert state.tokens == Tokens(access="acc-1", refresh="refresh-1")
        assert request.session.modified is False
        assert not response.cookies

    def test_check_ends_the_session_and_finish_deletes_the_cookies(self, make):
        request = make(cookies={"access_token": FORGED, "refresh_token": "refresh-1"})
        state = TokenState.of(request)
        with pytest.raises(SessionEnded) as info:
            state.check()
        assert info.value.reason == "foreign_cookies"
        for shown in (str(info.value), repr(info.value), repr(state.incoming), repr(state)):
            assert FORGED not in shown and "refresh-1" not in shown
        assert not request.user.is_authenticated
        assert SESSION_KEY not in request.session
        assert state.tokens == Tokens() and state.record is None
        response = HttpResponse()
        state.finish(response)
        assert {name: m["max-age"] for name, m in response.cookies.items()} == {
            "access_token": 0,
            "refresh_token": 0,
        }

    def test_forget_deletes_at_the_paths_of_cookies_about_to_be_written(self, make):
        request = make()
        state = TokenState.of(request)
        state.signed_in(
            ADMIN,
            [
                BackendCookie(name="access_token", value="acc-2", max_age=60),
                BackendCookie(name="refresh_token", value="r-2", max_age=60, path="/auth/r"),
            ],
        )
        state.forget()
        response = HttpResponse()
        state.finish(response)
        deleted = {(m.key, m["path"]) for m in response.cookies.values() if m["max-age"] == 0}
        assert deleted == {
            (name, path) for name in ("access_token", "refresh_token") for path in ("/", "/auth/r")
        }
        assert request.session[RECORD_KEY]["refresh_hash"] == token_hash("refresh-1")

    def test_a_new_sign_in_is_recorded_and_relayed(self, make):
        request = make(record="none", cookies={})
        state = TokenState.of(request)
        issued = [
            BackendCookie(name="access_token", value="acc-2", max_age=60),
            BackendCookie(name="refresh_token", value="r-2", max_age=3600),
        ]
        state.signed_in(ADMIN, issued)
        response = HttpResponse()
        state.finish(response)
        assert {n: m.value for n, m in response.cookies.items()} == {
            "access_token": "acc-2",
            "refresh_token": "r-2",
        }
        assert request.session[RECORD_KEY]["refresh_hash"] == token_hash("r-2")
        assert request.session[RECORD_KEY]["user_id"] == ADMIN.id  # whom later profiles must match
        assert state.tokens == Tokens(access="acc-2", refresh="r-2")
        assert 3590 <= request.session.get_expiry_age() <= 3600

    @pytest.mark.parametrize(("same_binding", "kept"), [(True, 2), (False, 0)])
    def test_a_stale_request_never_overwrites_a_newer_record(self, make, same_binding, kept):
        request = make()
        state = TokenState.of(request)
        record = state.load()
        newer = replace(record, generation=2, binding=record.binding if same_binding else "x")
        self.store(request, newer, sealed=vault.seal(Tokens(access="acc-9", refresh="r-9")))
        state.apply_profile(ADMIN)
        state.finish(HttpResponse())
        assert request.session[RECORD_KEY]["generation"] == kept
        # The sealed pair always goes with its record.
        kept_pair = "r-9" if same_binding else "refresh-1"
        assert vault.tokens_of(request.session).refresh == kept_pair

    @pytest.mark.parametrize("made_here", [True, False], ids=["own-call", "collected"])
    def test_only_a_pair_made_elsewhere_reads_the_stored_session_again(
        self, make, backend, monkeypatch, made_here
    ):
        """The pair this request's own call just made is the newest there is; a pair
        collected from the cache may have been moved past by another request."""
        fakes.stub_refresh(backend)
        fakes.stub_me(backend)
        request = make(cookies={"refresh_token": "refresh-1"})  # refreshes before the view
        state = TokenState.of(request)
        if not made_here:
            binding = state.load().binding
            deadline = time.monotonic() + 3
            refresh.outcome("refresh-1", binding=binding, keep_for=600, deadline=deadline)
        reads = []
        stored_record = delivery._stored_session
        monkeypatch.setattr(
            delivery, "_stored_session", lambda s: reads.append(s) or stored_record(s)
        )

        state.check()
        state.refresh_if_due()
        state.tokens_for_call()  # as the view's first backend call would
        state.finish(HttpResponse())

        assert request.session[RECORD_KEY]["refresh_hash"] == token_hash("refresh-2")
        assert len(reads) == (0 if made_here else 1)
        assert sent_refresh_tokens(backend) == ["refresh-1"]

    @pytest.mark.parametrize(("expires_in", "age"), [(3600, 3600), (-100, 1)])
    def test_the_session_expires_with_the_refresh_token(self, make, expires_in, age):
        request = make(record=replace(issued(), refresh_expires_at=time.time() + expires_in))
        state = TokenState.of(request)
        state.load()
        state.apply_profile(ADMIN)
        state.finish(HttpResponse())
        assert age - 10 <= request.session.get_expiry_age() <= age

    def test_a_rejection_without_a_record_or_after_a_renewal_ends_the_session(self, make):
        request = make(record="none")
        with pytest.raises(SessionEnded) as info:
            TokenState.of(request).renew_after_rejection()
        assert info.value.reason == "no_record"
        state = TokenState(make())
        state.renewal.renewed = True
        with pytest.raises(SessionEnded) as info:
            state.renew_after_rejection()
        assert info.value.reason == "rejected_twice"


    def test_a_rejection_of_a_renewed_pair_already_expired_is_the_backend_being_slow(self, make):
        expired = replace(issued(), access_expires_at=time.time() - 0.5)
        state = TokenState(make(record=expired))
        state.renewal.renewed = True
        with pytest.raises(BackendUnavailable) as info:
            state.renew_after_rejection()
        assert "after the renewed access token had expired" in str(info.value)  # for the log
        assert state.load() == expired  # nothing ended

    def test_the_user_is_read_again_the_moment_the_interval_has_passed(
        self, make, backend, settings, monkeypatch
    ):
        settings.AUTH_REVALIDATE_INTERVAL = 300
        clock = types.SimpleNamespace(time=lambda: 1000.0, monotonic=time.monotonic)
        monkeypatch.setattr(renewal, "time", clock)
        me = fakes.stub_me(backend)
        for validated_at, reads in ((700.1, 0), (700.0, 1)):
            state = TokenState(make(record=replace(issued(), validated_at=validated_at)))
            state.load()
            state.revalidate_if_due()
            assert len(me.calls) == reads

    def test_a_revalidation_the_backend_forbids_ends_the_session_as_refused(
        self, make, backend, settings
    ):
        """The client raises TokensRefused; the state ends the session for that reason."""
        settings.AUTH_REVALIDATE_INTERVAL = 300
        fakes.stub_me(backend, status=403)
        request = make(record=replace(issued(), validated_at=time.time() - 301))
        state = TokenState(request)
        state.load()
        with pytest.raises(SessionEnded) as info:
            state.revalidate_if_due()
        assert info.value.reason == Reason.REFUSED
        assert SESSION_KEY not in request.session

    def test_tokens_for_a_call_without_a_record_are_the_incoming_ones(self, make, backend):
        state = TokenState(make(record="none"))
        assert state.tokens_for_call() == Tokens(access="acc-1", refresh="refresh-1")
        assert len(backend.calls) == 0

    @pytest.mark.parametrize("status", [200, 401])
    def test_finish_collects_a_background_refresh_that_ended_meanwhile(
        self, make, backend, gates, settle, status
    ):
        request = make(record=due_but_valid())
        gate = gates()
        if status == 200:
            fakes.stub_held_refresh(backend, gate)
        else:
            fakes.stub_held(backend, "POST", "/auth/refresh", gate, status=status)
        fakes.stub_me(backend)
        state = TokenState.of(request)
        state.check()
        state.refresh_if_due()  # due but valid: in the background, returns at once
        pending = HttpResponse()
        TokenState(request).finish(pending)  # a state that started nothing writes nothing
        assert not state.renewed and not pending.cookies

        gate.wait_entered()
        gate.open()
        wait(settle, timeout=5)
        response = HttpResponse()
        state.finish(response)

        if status == 200:
            assert response.cookies["refresh_token"].value == "refresh-2"
            assert request.session[RECORD_KEY]["refresh_hash"] == token_hash("refresh-2")
        else:
            assert response.cookies["refresh_token"]["max-age"] == 0
            assert SESSION_KEY not in request.session

    def test_finish_leaves_a_refresh_still_running_to_the_next_request(self, make, backend, gates):
        request = make(record=due_but_valid())
        fakes.stub_held_refresh(backend, gates())
        state = TokenState.of(request)
        state.refresh_if_due()
        response = HttpResponse()
        state.finish(response)
        assert not response.cookies
        assert request.session[RECORD_KEY]["refresh_hash"] == token_hash("refresh-1")

    def test_renew_claims_under_the_sessions_binding_for_the_refresh_tokens_life(
        self, make, backend, locmem_cache
    ):
        fakes.stub_refresh(backend, refresh="refresh-2")
        fakes.stub_me(backend)
        request = make()
        state = TokenState.of(request)
        record = state.load()
        seen = {}
        outcome = refresh.outcome

        def recording(*args, **kwargs):
            seen.update(kwargs)
            return outcome(*args, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(refresh, "outcome", recording)
            state.renew()

        assert seen["binding"] == record.binding
        assert seen["keep_for"] == record.keep_outcome_for() > 0
        assert seen["claims"] is state.renewal._claims
        stored = locmem_cache.get(refresh.entry_key(token_hash("refresh-1")))
        assert stored["binding"] == record.binding

    def test_one_failed_renewal_per_request(self, make, backend, monkeypatch):
        """A transient failure is remembered: the same request never tries again."""
        calls = []

        def unavailable(*args, **kwargs):
            calls.append(kwargs)
            raise BackendUnavailable("the cache neither holds nor takes the refresh claim")

        monkeypatch.setattr(refresh, "outcome", unavailable)
        state = TokenState.of(make())
        for _ in range(2):
            with pytest.raises(BackendUnavailable, match="neither holds nor takes"):
                state.renew()
        assert len(calls) == 1

    def test_a_chain_longer_than_max_chain_is_pending(self, make, backend):
        for n in range(2, 8):
            fakes.stub_refresh(backend, access=fakes.access_jwt(ttl=-5), refresh=f"refresh-{n}")
        state = TokenState.of(make())
        with pytest.raises(RefreshPending, match="^too many refreshes in a row; try again$"):
            state.renew()
        assert len(calls_to(backend, "/auth/refresh")) == checking.MAX_CHAIN

    def test_a_spent_token_of_another_session_ends_this_one_as_foreign(
        self, make, backend, caplog, monkeypatch
    ):
        monkeypatch.setattr(
            refresh, "outcome", lambda *a, **kw: refresh.Outcome(state=refresh.FOREIGN)
        )
        with pytest.raises(SessionEnded) as info:
            TokenState.of(make()).renew()
        assert info.value.reason == "foreign_cookies"
        assert "Session of backend user 1 ended: foreign_cookies" in caplog.messages


def test_half_a_processs_threads_may_wait_for_refreshes_the_rest_answer_at_once(
    signed_in, backend, gates, settings, monkeypatch, caplog
):
    """With a slow backend, pages that need no backend always find a thread: a request
    that would wait beside half the process's threads, all waiting long, answers 503."""
    from accounts.slots import Slots

    settings.SERVER_THREADS = 2  # one of them may wait
    settings.AUTH_REFRESH_WAIT = 30.0  # were it to wait, the gate's limit would end it: 200
    monkeypatch.setattr(renewal, "_refresh_waiters", Slots("refresh waits", "half", wait=0))
    client = signed_in(access=fakes.access_jwt(ttl=-10))
    gate = gates(limit=3)
    fakes.stub_held_refresh(backend, gate)
    fakes.stub_me(backend)

    with renewal._refresh_waiters.hold(limit=1):  # another request, waiting long
        response = client.get(NEEDS_TOKEN)

    assert response.status_code == 503
    assert response.json()["error"] == "backend_unavailable"
    assert any("refresh waits of this process are waiting" in m for m in caplog.messages)
    assert SESSION_KEY in client.session
    gate.wait_entered()  # the refresh itself was started before the view, and goes on


def test_a_tab_over_the_bound_queues_while_the_other_waiters_are_young(
    signed_in, backend, gates, settings
):
    """On a busy host a quick refresh can take over a second: a request beyond the bound
    waits for a slot while the waiters holding them have waited under 2 s, not 503."""
    settings.SERVER_THREADS = 2  # one of them may wait
    client = signed_in(access=fakes.access_jwt(ttl=-10))
    gate = gates()
    fakes.stub_held_refresh(backend, gate)
    fakes.stub_me(backend)
    holding, release = threading.Event(), threading.Event()

    def another_tab():  # waiting for the same refresh, since just now
        with renewal._refresh_waiters.hold(limit=1):
            holding.set()
            release.wait(10)

    other = threading.Thread(target=another_tab)
    other.start()
    assert holding.wait(5)
    # The refresh lands 1.4 s on: the other tab lets go of its slot, this one takes it.
    landing = threading.Timer(1.4, lambda: (gate.open(), release.set()))
    landing.start()
    try:
        response = client.get(NEEDS_TOKEN)
    finally:
        landing.cancel()
        release.set()
        other.join()

    assert response.status_code == 200


def test_an_outcome_already_known_is_collected_without_a_waiting_slot(
    rf, db, locmem_cache, backend, settle, settings, monkeypatch
):
    """The bound is on waiting: a refresh that has answered is taken at once, however
    many requests of the process wait for slower ones."""
    from accounts.slots import Slots

    settings.SERVER_THREADS = 2
    monkeypatch.setattr(renewal, "_refresh_waiters", Slots("refresh waits", "half", wait=0))
    fakes.stub_refresh(backend, refresh="refresh-2")
    fakes.stub_me(backend)
    state = TokenState.of(fakes.direct_request(rf))
    binding = state.load().binding
    refresh.outcome("refresh-1", binding=binding, keep_for=600, deadline=time.monotonic() + 5)
    wait(settle, timeout=5)

    with renewal._refresh_waiters.hold(limit=1):  # another request, waiting long
        tokens = state.renew()

    assert tokens.refresh == "refresh-2"
