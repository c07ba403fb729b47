"""Single-flight refresh (accounts/refresh.py): each refresh token is presented once."""

import contextlib
import logging
import threading
import time
from concurrent.futures import Future, wait
from unittest import mock

import pytest
import requests

from accounts import refresh
from accounts.exceptions import BackendUnavailable, RefreshPending
from accounts.record import token_hash
from tests import fakes
from tests.fakes import calls_to

pytestmark = pytest.mark.usefixtures("settle")
BINDING = "binding-1"


@pytest.fixture
def service(backend, locmem_cache, settings):
    settings.AUTH_REFRESH_GRACE = 20
    settings.AUTH_REFRESH_LOCK_TTL = 1
    return backend


def run(presented: str = "refresh-1", *, binding=BINDING, round_=0, wait: float | None = 3.0):
    deadline = None if wait is None else time.monotonic() + wait
    return refresh.outcome(
        presented, binding=binding, round_=round_, keep_for=600, deadline=deadline
    )


def key(presented: str = "refresh-1", round_=0) -> str:
    return refresh.entry_key(token_hash(presented), round_)


def values(outcome) -> dict[str, str]:
    return {c.name: c.value for c in outcome.cookies}


def sent_refresh_tokens(rsps) -> list[str]:
    return [fakes.sent_cookie(c, "refresh_token") for c in calls_to(rsps, "/auth/refresh")]


def poll(read, *, seconds: float):
    """Return the first truthy `read()` within `seconds` (None if there is none)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if value := read():
            return value
        time.sleep(0.05)
    return None


def pending(started_at: float, binding=BINDING) -> dict:
    return {"state": "pending", "binding": binding, "started_at": started_at, "round": 0}


def test_concurrent_callers_share_one_backend_call(service, gates):
    gate = gates()
    fakes.stub_held_refresh(service, gate)
    fakes.stub_me(service)
    barrier = threading.Barrier(8)
    results, errors = [], []

    def caller():
        barrier.wait()
        try:
            results.append(values(run(wait=8)))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    gate.wait_entered()
    gate.open()
    for thread in threads:
        thread.join(10)

    assert errors == []
    assert len(results) == 8 and all(r == results[0] for r in results)
    assert results[0]["refresh_token"] == "refresh-2"
    assert sent_refresh_tokens(service) == ["refresh-1"]


def test_a_claim_is_made_once_and_marked_alive_from_submission(service, gates, locmem_cache):
    gate = gates()
    fakes.stub_held_refresh(service, gate)
    claim = refresh.start(
        "refresh-1", binding=BINDING, round_=0, keep_for=600, replaced_access="acc-hash"
    )

    assert claim.key == key()
    entry = locmem_cache.get(key())
    assert (entry["state"], entry["binding"], entry["round"]) == ("pending", BINDING, 0)
    assert entry["replaced_access"] == "acc-hash"
    assert entry["started_at"] == pytest.approx(time.time(), abs=2)
    assert locmem_cache.get(f"{key()}:alive") is not None
    assert refresh.start("refresh-1", binding="another", round_=0, keep_for=600) is None

    gate.open()
    claim.future.result(5)
    assert locmem_cache.get(f"{key()}:alive") is None
    assert sent_refresh_tokens(service) == ["refresh-1"]
    assert refresh.peek("refresh-1", binding=BINDING).replaced_access == "acc-hash"


def test_the_pool_size_is_a_setting(service, gates, settings):
    settings.AUTH_REFRESH_POOL_SIZE = 1
    held = {"refresh-a": gates(), "refresh-b": gates()}

    def answer(request):
        held[fakes.sent_token(request, "refresh_token")].hold()
        return (200, fakes.token_headers(fakes.access_jwt(), "refresh-next"), "")

    service.add_callback("POST", f"{fakes.BASE}/auth/refresh", callback=answer)
    fakes.stub_me(service)
    claims = [refresh.start(name, binding=BINDING, round_=0, keep_for=600) for name in sorted(held)]
    held["refresh-a"].wait_entered()
    assert not held["refresh-b"].entered.wait(0.3), "one thread: the second call queues"
    held["refresh-a"].open()
    held["refresh-b"].wait_entered()
    held["refresh-b"].open()
    wait([claim.future for claim in claims], timeout=5)


def test_the_call_runs_in_the_refresh_pool(service):
    seen = []

    def answer(request):
        seen.append(threading.current_thread().name)
        return (200, fakes.token_headers(fakes.access_jwt(), "refresh-2"), "")

    service.add_callback("POST", f"{fakes.BASE}/auth/refresh", callback=answer)
    fakes.stub_me(service)
    assert run().state == refresh.OK
    assert seen[0].startswith("token-refresh")


class TestOutcomes:
    def test_ok_is_kept_for_its_session_and_given_to_others_within_grace(
        self, service, locmem_cache
    ):
        fakes.stub_refresh(service)
        fakes.stub_me(service)
        first = run()
        assert first.state == refresh.OK
        assert values(run(binding="another-session")) == values(first)

        entry = locmem_cache.get(key())
        locmem_cache.set(key(), {**entry, "finished_at": time.time() - 21}, 600)
        assert values(run()) == values(first)
        assert run(binding="another-session").state == refresh.FOREIGN
        assert sent_refresh_tokens(service) == ["refresh-1"]

    def test_refused_is_kept(self, service):
        fakes.stub_refresh(service, status=401, json={"message": "reused"})
        assert run().state == refresh.REFUSED
        assert run(binding="another").state == refresh.REFUSED
        assert len(calls_to(service, "/auth/refresh")) == 1

    @pytest.mark.parametrize(
        "answer",
        [{"body": requests.ReadTimeout()}, {"status": 504}, {"json": {"ok": True}}],
        ids=["read-timeout", "504", "no-cookies"],
    )
    def test_a_maybe_processed_failure_is_unknown_and_kept(self, service, answer):
        service.post(f"{fakes.BASE}/auth/refresh", **{"status": 200, **answer})
        assert run().state == refresh.UNKNOWN
        assert run().state == refresh.UNKNOWN
        assert len(calls_to(service, "/auth/refresh")) == 1

    def test_an_unexpected_error_is_unknown(self, service, caplog):
        def explode(request):
            raise RuntimeError("adapter bug")

        service.add_callback("POST", f"{fakes.BASE}/auth/refresh", callback=explode)
        assert run().state == refresh.UNKNOWN
        assert "Refresh call failed unexpectedly; its session will end" in caplog.messages

    @pytest.mark.parametrize(
        "answer", [{"body": fakes.connection_refused()}, {"status": 500}, {"status": 429}]
    )
    def test_never_sent_releases_the_claim_for_the_next_request(
        self, service, locmem_cache, answer
    ):
        service.post(f"{fakes.BASE}/auth/refresh", **{"status": 200, **answer})
        fakes.stub_refresh(service)
        fakes.stub_me(service)

        with pytest.raises(BackendUnavailable, match="did not reach the backend"):
            run()

        assert locmem_cache.get(key()) is None
        assert len(calls_to(service, "/auth/refresh")) == 1, "one attempt per caller"
        assert values(run())["refresh_token"] == "refresh-2"
        assert sent_refresh_tokens(service) == ["refresh-1", "refresh-1"]


def test_a_cache_that_neither_holds_nor_takes_the_claim_is_unavailable(
    service, locmem_cache, monkeypatch
):
    """A database cache timing out on its lock: add says taken, get finds nothing."""

    class Jammed:
        def __getattr__(self, name):
            return getattr(locmem_cache, name)

        def get(self, *args, **kwargs):
            return None

        def add(self, *args, **kwargs):
            return False

    monkeypatch.setattr(refresh, "cache", Jammed())
    fakes.stub_refresh(service)

    with pytest.raises(BackendUnavailable):
        run(wait=None)
    with pytest.raises(BackendUnavailable):
        run(wait=3.0)
    assert sent_refresh_tokens(service) == [], "the token was never sent"


class TestTheOwnCall:
    """The caller whose call it is takes the outcome from the call, not back from the cache."""

    def test_the_owner_takes_its_outcome_from_its_call(self, service, locmem_cache, monkeypatch):
        fakes.stub_refresh(service)
        fakes.stub_me(service, "evaluator")
        reads = []

        class ReadSpy:
            def __getattr__(self, name):
                return getattr(locmem_cache, name)

            def get(self, cache_key, *args):
                reads.append(cache_key)
                return locmem_cache.get(cache_key, *args)

        monkeypatch.setattr(refresh, "cache", ReadSpy())

        own = run()

        assert (own.state, own.own, own.profile.roles) == (refresh.OK, True, ("evaluator",))
        assert values(own)["refresh_token"] == "refresh-2"
        assert reads == [key()], "one read before the claim, none after the call"
        collected = run()
        assert (collected.own, values(collected)) == (False, values(own))

    def test_a_request_collects_its_background_call_from_the_call(
        self, service, gates, locmem_cache
    ):
        gate = gates()
        fakes.stub_held_refresh(service, gate)
        fakes.stub_me(service)
        claims = {}
        with pytest.raises(RefreshPending):
            refresh.outcome(
                "refresh-1", binding=BINDING, keep_for=600, deadline=None, claims=claims
            )
        assert list(claims) == [key()]
        gate.open()
        claims[key()].future.result(5)
        locmem_cache.delete(key())  # gone from the cache: only the call itself can answer

        found = refresh.outcome(
            "refresh-1", binding=BINDING, keep_for=600, deadline=None, claims=claims
        )

        assert (found.state, found.own, values(found)["refresh_token"]) == (
            refresh.OK,
            True,
            "refresh-2",
        )
        assert sent_refresh_tokens(service) == ["refresh-1"]

    def test_a_call_that_failed_past_its_handling_leaves_the_cache_to_answer(
        self, service, gates, locmem_cache, monkeypatch, caplog
    ):
        gate = gates()
        fakes.stub_held_refresh(service, gate)
        claims = {}
        with pytest.raises(RefreshPending):
            refresh.outcome(
                "refresh-1", binding=BINDING, keep_for=600, deadline=None, claims=claims
            )
        running = claims[key()].future
        broken = running.__class__()
        broken.set_exception(RuntimeError("cache write failed"))
        monkeypatch.setattr(claims[key()], "future", broken)

        def again():
            refresh.outcome(
                "refresh-1", binding=BINDING, keep_for=600, deadline=None, claims=claims
            )

        with pytest.raises(RefreshPending):
            again()  # the claim is still pending in the cache
        assert "A refresh call failed; reading what it left in the cache" in caplog.messages
        locmem_cache.delete(key())
        with pytest.raises(BackendUnavailable):
            again()  # one attempt per request: never a claim of its own a second time
        gate.open()
        running.result(5)
        assert sent_refresh_tokens(service) == ["refresh-1"]


class TestWaiting:
    def test_without_a_deadline_a_call_in_flight_raises_at_once(self, service, gates):
        gate = gates()
        fakes.stub_held_refresh(service, gate)
        with pytest.raises(RefreshPending):
            run(wait=None)
        assert not gate.opened.is_set()

    def test_the_budget_is_honoured_and_the_result_collected_later(self, service, gates, settle):
        gate = gates()
        fakes.stub_held_refresh(service, gate)
        fakes.stub_me(service)
        with pytest.raises(RefreshPending):
            run(wait=0.2)
        gate.wait_entered()
        gate.open()
        wait(settle, timeout=5)

        assert values(run(wait=None))["refresh_token"] == "refresh-2"
        assert len(calls_to(service, "/auth/refresh")) == 1

    def test_another_callers_claim_is_waited_for_not_repeated(self, service, locmem_cache):
        locmem_cache.set(key(), pending(time.time()), 600)
        started = time.monotonic()
        with pytest.raises(RefreshPending):
            run(wait=0.3)
        assert time.monotonic() - started >= 0.3
        assert calls_to(service, "/auth/refresh") == []

    @pytest.mark.parametrize(
        ("started_ago", "budget", "patience"),
        [(0, 5, 5), (3, 5, 2), (6, 5, -1), (0, 2, 2), (4, 2, 1), (None, 2, 2)],
        ids=["fresh", "begun", "outlasted", "short-budget", "both", "no-start-time"],
    )
    def test_patience_is_the_budget_and_never_past_the_wait_from_the_refreshs_start(
        self, settings, started_ago, budget, patience
    ):
        """Once a refresh has outlasted AUTH_REFRESH_WAIT the backend is slow: later
        requests answer at once instead of each holding a thread for a budget."""
        settings.AUTH_REFRESH_WAIT = 5.0
        entry = {} if started_ago is None else {"started_at": time.time() - started_ago}
        left = refresh.patience(entry, time.monotonic() + budget)
        assert left == pytest.approx(patience, abs=0.25)

    def test_without_a_budget_there_is_no_patience(self):
        assert refresh.patience({"started_at": time.time()}, None) == 0

    def test_a_refresh_that_outlasted_the_wait_is_not_waited_for(
        self, service, locmem_cache, settings
    ):
        settings.AUTH_REFRESH_WAIT = 1.0
        locmem_cache.set(key(), pending(time.time() - 2), 600)
        locmem_cache.set(f"{key()}:alive", "1", 5)
        with pytest.raises(RefreshPending):
            run(wait=30)  # were the budget alone to count, the test would wait 30 s
        assert calls_to(service, "/auth/refresh") == []

    def test_a_pending_claim_without_an_alive_mark_is_unknown(self, service, locmem_cache, caplog):
        locmem_cache.set(key(), pending(time.time() - 1.5), 600)
        assert run(wait=None).state == refresh.UNKNOWN
        assert calls_to(service, "/auth/refresh") == []
        assert "A refresh's owner died with the call in flight; outcome unknown" in caplog.messages

    def test_a_claim_without_a_start_time_and_mark_is_unknown(self, service, locmem_cache):
        locmem_cache.set(key(), {"state": "pending", "binding": BINDING}, 600)
        assert run(wait=None).state == refresh.UNKNOWN

    def test_an_old_claim_still_marked_alive_is_waited_for(self, service, locmem_cache):
        locmem_cache.set(key(), pending(time.time() - 30), 600)
        locmem_cache.set(f"{key()}:alive", "1", 5)
        with pytest.raises(RefreshPending):
            run(wait=0.1)
        assert calls_to(service, "/auth/refresh") == []

    def test_a_young_claim_is_waited_for_before_its_mark_appears(self, service, locmem_cache):
        locmem_cache.set(key(), pending(time.time() - 0.5), 600)
        with pytest.raises(RefreshPending):
            run(wait=None)


class TestTheStoredPair:
    def test_the_pair_is_stored_before_the_profile_is_read(self, service, gates, locmem_cache):
        gate = gates()
        fakes.stub_refresh(service)
        fakes.stub_held(service, "GET", "/users/me", gate, body='{"id": 1}')
        claim = refresh.start("refresh-1", binding=BINDING, round_=0, keep_for=600)

        gate.wait_entered()
        early = refresh.peek("refresh-1", binding=BINDING)
        assert early.state == refresh.OK and early.profile is None
        assert values(early)["refresh_token"] == "refresh-2"
        gate.open()
        claim.future.result(5)

    def test_the_profile_read_with_the_new_pair_is_kept_with_it(self, service, settle):
        fakes.stub_refresh(service, access="new.access.token")
        me = fakes.stub_me(service, "evaluator")
        run()
        wait(settle, timeout=5)  # the pair is kept first, the profile a moment later
        outcome = refresh.peek("refresh-1", binding=BINDING)
        assert outcome.profile.email == "evaluator@example.com"
        assert outcome.profile.roles == ("evaluator",)
        assert fakes.sent_cookie(me.calls[0], "access_token") == "new.access.token"
        assert repr(outcome) == "Outcome(state='ok', cookies=2)"
        assert outcome.tokens.access == "new.access.token"

    def test_a_failed_profile_read_keeps_the_pair(self, service):
        fakes.stub_refresh(service)
        fakes.stub_me(service, status=503)
        outcome = run()
        assert (outcome.state, outcome.profile) == (refresh.OK, None)

    def test_cookie_lifetimes_survive_the_cache(self, service):
        service.post(
            f"{fakes.BASE}/auth/refresh",
            headers=[
                ("Set-Cookie", "access_token=a2; Path=/"),
                ("Set-Cookie", "refresh_token=r2; Max-Age=1800; Path=/auth/refresh"),
                ("Set-Cookie", "other=; Max-Age=0"),
            ],
        )
        fakes.stub_me(service)
        by_name = {c.name: c for c in run().cookies}
        assert by_name["access_token"].max_age is None
        assert 1790 <= by_name["refresh_token"].max_age <= 1800
        assert by_name["refresh_token"].path == "/auth/refresh"
        assert "other" not in by_name, "only the token cookies are the backend's answer to keep"

    def test_the_cache_holds_no_readable_token(self, service, locmem_cache):
        access = fakes.access_jwt()
        fakes.stub_refresh(service, access=access, refresh="refresh-2-secret")
        fakes.stub_me(service)
        run("refresh-1-secret")
        entry = locmem_cache.get(key("refresh-1-secret"))
        assert isinstance(entry["sealed"], bytes)
        for secret in ("refresh-2-secret", "refresh-1-secret", access):
            assert secret not in repr(entry)
        assert entry["next_refresh"] == token_hash("refresh-2-secret")
        assert entry["next_access"] == token_hash(access)

    def test_only_the_spent_token_opens_its_outcome(self, service, locmem_cache):
        fakes.stub_refresh(service)
        fakes.stub_me(service)
        run()
        locmem_cache.set(key("refresh-x"), locmem_cache.get(key()), 600)
        assert run("refresh-x").state == refresh.UNKNOWN
        assert len(calls_to(service, "/auth/refresh")) == 1


class TestRounds:
    def test_a_non_rotating_backend_gets_one_call_per_round(self, service, locmem_cache):
        fakes.stub_refresh(service, access=fakes.access_jwt(ttl=60), refresh="refresh-1")
        fakes.stub_refresh(service, access=fakes.access_jwt(ttl=600), refresh="refresh-1")
        fakes.stub_me(service)
        first = run()
        step = refresh.successor(token_hash("refresh-1"), 0, BINDING)
        assert step == (token_hash(first.tokens.access), token_hash("refresh-1"), 1)

        second = run(round_=step[2])

        assert key(round_=1) == f"{key()}.1"
        assert locmem_cache.get(key(round_=1))["state"] == refresh.OK
        assert second.tokens.access != first.tokens.access
        assert refresh.successor(token_hash("refresh-1"), 1, BINDING) == (
            token_hash(second.tokens.access),
            token_hash("refresh-1"),
            2,
        )
        assert sent_refresh_tokens(service) == ["refresh-1", "refresh-1"]

    def test_entry_keys(self):
        assert refresh.entry_key("abc") == "accounts:refresh:abc"
        assert refresh.entry_key("abc", 2) == "accounts:refresh:abc.2"

    def test_successor_walks_only_this_sessions_finished_pairs(self, service, locmem_cache):
        fakes.stub_refresh(service, access="acc-2", refresh="refresh-2")
        fakes.stub_me(service)
        assert refresh.successor(token_hash("refresh-1"), 0, BINDING) is None
        run()
        assert refresh.successor(token_hash("refresh-1"), 0, BINDING) == (
            token_hash("acc-2"),
            token_hash("refresh-2"),
            0,
        )
        assert refresh.successor(token_hash("refresh-1"), 0, "another") is None
        locmem_cache.set(key(), pending(time.time()), 600)
        assert refresh.successor(token_hash("refresh-1"), 0, BINDING) is None


class TestPeek:
    def test_never_claims_nor_calls(self, service, locmem_cache):
        assert refresh.peek("refresh-1", binding=BINDING) is None
        assert locmem_cache.get(key()) is None
        locmem_cache.set(key(), pending(time.time()), 600)
        assert refresh.peek("refresh-1", binding=BINDING) is None
        assert len(service.calls) == 0

    def test_reports_finished_outcomes(self, service, locmem_cache):
        locmem_cache.set(key(), {**pending(0), "state": refresh.REFUSED}, 600)
        assert refresh.peek("refresh-1", binding=BINDING).state == refresh.REFUSED
        fakes.stub_refresh(service)
        fakes.stub_me(service)
        run("refresh-9")
        assert refresh.peek("refresh-9", binding=BINDING).state == refresh.OK


class TestKeeper:
    def test_the_alive_mark_is_renewed_while_a_slow_call_runs(
        self, service, gates, locmem_cache, settings
    ):
        settings.AUTH_REFRESH_LOCK_TTL = 2  # renewed every 0.5 s: 1.5 s of slack on a busy CI
        gate = gates()
        fakes.stub_held_refresh(service, gate)
        claim = refresh.start("refresh-1", binding=BINDING, round_=0, keep_for=600)
        alive = f"{key()}:alive"
        seen = []
        for _ in range(25):  # 2.5 s: longer than the mark's own life
            time.sleep(0.1)
            seen.append(locmem_cache.get(alive))
        locmem_cache.delete(alive)  # the cache lost it: the keeper puts it back
        restored = poll(lambda: locmem_cache.get(alive), seconds=3)
        gate.open()
        claim.future.result(5)
        released = locmem_cache.get(alive)
        time.sleep(1.1)  # two renewal rounds: a released mark is not renewed

        assert all(seen), "the mark never lapsed while its call was alive"
        assert restored is not None
        assert released is None and locmem_cache.get(alive) is None

    def test_a_mark_nobody_renews_lapses(self, service, locmem_cache):
        keeper, hung = refresh._Keeper(), threading.Event()
        keeper._thread = threading.Thread(target=hung.wait, daemon=True)  # a keeper that hangs
        keeper._thread.start()
        try:
            keeper.hold("k:alive")
            assert locmem_cache.get("k:alive") == "1"
            time.sleep(1.2)  # the mark's life is AUTH_REFRESH_LOCK_TTL = 1 s
            assert locmem_cache.get("k:alive") is None
        finally:
            hung.set()

    def test_a_keeper_that_died_is_replaced(self, service, locmem_cache, monkeypatch, caplog):
        class RenewalFails:
            """The cache fails the keeper's renewals (its first mark was written)."""

            def __getattr__(self, name):
                return getattr(locmem_cache, name)

            def set(self, *args, **kwargs):
                if threading.current_thread().name == "token-refresh-keeper":
                    raise RuntimeError("cache down")
                return locmem_cache.set(*args, **kwargs)

            def set_many(self, *args, **kwargs):
                if threading.current_thread().name == "token-refresh-keeper":
                    raise RuntimeError("cache down")
                return locmem_cache.set_many(*args, **kwargs)

        keeper = refresh._Keeper()
        monkeypatch.setattr(refresh, "cache", RenewalFails())
        keeper.hold("k:alive")
        keeper._thread.join(5)
        assert not keeper._thread.is_alive()
        assert "The refresh keeper stopped" in caplog.messages

        monkeypatch.setattr(refresh, "cache", locmem_cache)
        keeper.hold("k:alive")
        assert keeper._thread.is_alive()
        assert keeper._thread.name == "token-refresh-keeper" and keeper._thread.daemon
        keeper.release("k:alive")
        assert locmem_cache.get("k:alive") is None


def test_nothing_logged_holds_a_token(service, caplog):
    caplog.set_level(logging.DEBUG)
    access = fakes.access_jwt()
    fakes.stub_refresh(service, access=access, refresh="refresh-secret-2")
    fakes.stub_me(service)
    run("refresh-secret-1")
    assert caplog.records
    for secret in ("refresh-secret-1", "refresh-secret-2", access):
        assert secret not in caplog.text


# --- outcome()'s edges: one call per request, lost claims, never waiting, backoff -----


def finished_later(seconds: float, value=None):
    """A Future that a timer thread completes with `value` after `seconds`."""
    future = Future()
    timer = threading.Timer(seconds, future.set_result, args=(value,))
    timer.start()
    return future, timer


def test_a_request_whose_own_call_crashed_does_not_start_another(service, monkeypatch):
    """One attempt per request: the claim this request made crashed and left no entry."""
    crashed = Future()
    crashed.set_exception(RuntimeError("pool thread died"))
    claims = {key(): refresh.Claim(key=key(), future=crashed)}
    started = []
    monkeypatch.setattr(refresh, "start", lambda *a, **kw: started.append(kw))

    with pytest.raises(BackendUnavailable, match="^the refresh call did not reach the backend$"):
        refresh.outcome(
            "refresh-1", binding=BINDING, keep_for=600, deadline=time.monotonic() + 1, claims=claims
        )
    assert started == []
    assert sent_refresh_tokens(service) == []


def test_a_call_that_crashed_and_released_its_claim_is_not_started_again(service, monkeypatch):
    """The call this outcome() started crashed after releasing its claim: no second call."""
    calls = []

    def crash(refresh_token, key_, entry, keep_for):
        calls.append(refresh_token)
        refresh.cache.delete(key_)
        refresh._keeper.release(f"{key_}:alive")  # as the real call's `finally` does
        raise RuntimeError("crashed after releasing the claim")

    monkeypatch.setattr(refresh, "_call_backend", crash)
    with pytest.raises(BackendUnavailable, match="^the refresh call did not reach the backend$"):
        run(wait=2)
    assert calls == ["refresh-1"]


def test_the_cache_counts_as_unavailable_after_exactly_max_lost_claims(service, monkeypatch):
    """A claim lost MAX_LOST_CLAIMS times to an entry nobody can read: give up, never spin."""
    tries = []
    monkeypatch.setattr(refresh, "start", lambda *a, **kw: tries.append(kw))

    with pytest.raises(BackendUnavailable, match="^the cache neither holds nor takes"):
        run(wait=2)
    assert len(tries) == refresh.MAX_LOST_CLAIMS == 3


@pytest.mark.parametrize("deadline", [None, -5], ids=["no-deadline", "spent-deadline"])
def test_the_own_running_call_is_not_waited_for_without_budget(service, deadline):
    """No deadline, or one already spent: the request's own running call raises RefreshPending
    at once."""
    future, timer = finished_later(0.5, refresh.Outcome(state=refresh.OK))
    claims = {key(): refresh.Claim(key=key(), future=future)}
    try:
        with pytest.raises(RefreshPending, match="^the refresh is still running; try again$"):
            refresh.outcome(
                "refresh-1",
                binding=BINDING,
                keep_for=600,
                deadline=None if deadline is None else time.monotonic() + deadline,
                claims=claims,
            )
        assert not future.done()  # it did not wait for the call
    finally:
        timer.join()


def test_someone_elses_call_is_polled_with_a_growing_capped_delay(service, monkeypatch):
    """Polling a pending entry: 10 ms, then x1.5 each time, never more than 250 ms."""
    refresh.cache.set(key(), pending(time.time()), 60)
    refresh.cache.set(f"{key()}:alive", 1, 60)
    me = threading.current_thread()
    slept = []
    real_sleep = time.sleep

    def recording_sleep(seconds):
        if threading.current_thread() is me:
            slept.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(refresh.time, "sleep", recording_sleep)
    with pytest.raises(RefreshPending, match="^the refresh is still running; try again$"):
        run(wait=1.5)
    expected = [0.01 * 1.5**n for n in range(9)]
    assert slept[:9] == pytest.approx([min(d, 0.25) for d in expected])
    assert max(slept) == pytest.approx(0.25)
    assert sum(slept) == pytest.approx(1.5, abs=0.2)


@pytest.fixture
def cache_timeouts(monkeypatch):
    """{cache key: the timeout of every add/set of it} for the refresh module's cache."""
    timeouts = {}

    class RecordingCache:
        def __init__(self, real):
            self.real = real

        def add(self, k, value, timeout=None, **kw):
            timeouts.setdefault(k, []).append(timeout)
            return self.real.add(k, value, timeout, **kw)

        def set(self, k, value, timeout=None, **kw):
            timeouts.setdefault(k, []).append(timeout)
            return self.real.set(k, value, timeout, **kw)

        def __getattr__(self, name):
            return getattr(self.real, name)

    monkeypatch.setattr(refresh, "cache", RecordingCache(refresh.cache))
    return timeouts


@pytest.mark.parametrize(
    ("answer", "state"),
    [
        ({"status": 200}, refresh.OK),
        ({"status": 401, "json": {"message": "reused"}}, refresh.REFUSED),
        ({"body": requests.ReadTimeout()}, refresh.UNKNOWN),
        ({"body": RuntimeError("adapter bug")}, refresh.UNKNOWN),
    ],
    ids=["ok", "refused", "timeout", "crash"],
)
def test_every_outcome_is_stored_under_the_claim_for_keep_for(
    service, locmem_cache, cache_timeouts, answer, state
):
    """The claim and its outcome, whatever it is, live as long as the caller says."""
    if state == refresh.OK:
        fakes.stub_refresh(service)
        fakes.stub_me(service)
    else:
        service.post(f"{fakes.BASE}/auth/refresh", **answer)
    assert run().state == state
    stored = locmem_cache.get(key())
    assert stored["state"] == state
    assert stored["binding"] == BINDING  # the claim's fields are kept with the outcome
    assert stored["finished_at"] == pytest.approx(time.time(), abs=5)
    assert set(cache_timeouts[key()]) == {600}  # the claim, and each write of its outcome


class FrozenWallClock:
    """`refresh.time` with time() fixed at `now` (monotonic and sleep stay real)."""

    def __init__(self, now: float):
        self.now = now

    def time(self) -> float:
        return self.now

    def __getattr__(self, name):
        return getattr(time, name)


@pytest.mark.parametrize(("queued", "warned"), [(1.0, False), (0.2, False), (2.25, True)])
def test_a_call_that_waited_for_a_pool_thread_says_so(service, monkeypatch, caplog, queued, warned):
    """More than POOL_WAIT_WARNING (1 s) between claim and call: the log names the setting."""
    fakes.stub_refresh(service)
    fakes.stub_me(service)
    now = time.time()
    monkeypatch.setattr(refresh, "time", FrozenWallClock(now))
    entry = {**pending(now - queued), "replaced_access": None}
    # In the pool, as start() runs it: the pool's thread has its own connections to close.
    refresh._executor().submit(refresh._call_backend, "refresh-1", key(), entry, 600).result()
    warning = "A refresh waited 2.2 s for a pool thread; raise AUTH_REFRESH_POOL_SIZE"
    assert (warning in caplog.messages) is warned
    assert any("pool thread" in m for m in caplog.messages) is warned


@pytest.mark.parametrize(
    ("answer", "level", "message"),
    [
        (
            {"status": 401, "json": {"message": "reused"}},
            logging.INFO,
            "The backend refused a refresh token",
        ),
        (
            {"body": requests.ReadTimeout()},
            logging.WARNING,
            "Refresh outcome unknown (POST /auth/refresh: ReadTimeout); its session will end",
        ),
        (
            {"body": fakes.connection_refused()},
            logging.WARNING,
            "Refresh never reached the backend (POST /auth/refresh: ConnectionError);"
            " may be retried",
        ),
    ],
    ids=["refused", "unknown", "never-sent"],
)
def test_each_ending_of_a_call_is_logged_once(service, caplog, answer, level, message):
    caplog.set_level(logging.INFO, logger="accounts.refresh")
    service.post(f"{fakes.BASE}/auth/refresh", **answer)
    with contextlib.suppress(BackendUnavailable):
        run()
    logged = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "accounts.refresh"]
    assert logged.count((level, message)) == 1


# --- the sealed outcome: its key, and the cookies it gives back ---------------------


def independent_fernet(material: bytes, info: bytes, salt: bytes):
    """HKDF-SHA256 -> Fernet, written out here rather than taken from accounts/record.py."""
    import base64

    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(material)
    return Fernet(base64.urlsafe_b64encode(key))


@pytest.mark.parametrize("token", ["refresh-1", "\udcff-lone-surrogate"])
def test_the_outcome_key_is_hkdf_of_the_token_salted_by_secret_key(settings, token):
    """Only a holder of the spent token and of SECRET_KEY can open what was sealed for it."""
    import hashlib

    from cryptography.fernet import InvalidToken

    settings.SECRET_KEY = "k" * 50
    sealed = refresh._fernet(token).encrypt(b"the new pair")
    salt = hashlib.sha256(settings.SECRET_KEY.encode()).digest()
    material = token.encode("utf-8", "surrogatepass")
    assert independent_fernet(material, b"accounts.refresh.outcome", salt).decrypt(sealed) == (
        b"the new pair"
    )
    for other in (
        independent_fernet(material, b"accounts.refresh.outcome", hashlib.sha256(b"x").digest()),
        independent_fernet(material, b"another purpose", salt),
        independent_fernet(b"refresh-2", b"accounts.refresh.outcome", salt),
    ):
        with pytest.raises(InvalidToken):
            other.decrypt(sealed)


def test_sealed_cookies_come_back_with_their_remaining_life_and_path(monkeypatch):
    from datetime import UTC, datetime

    from accounts.cookies import BackendCookie

    fernet = refresh._fernet("refresh-1")
    sealed = refresh._seal(
        fernet,
        [
            BackendCookie(name="access_token", value="a2", max_age=120, path="/"),
            BackendCookie(name="refresh_token", value="r2", path="/auth/refresh"),
            BackendCookie(name="old", value="", max_age=0),
            BackendCookie(
                name="dated", value="d", expires=datetime.fromtimestamp(time.time() + 50, UTC)
            ),
        ],
        None,
    )
    later = time.time() + 30
    monkeypatch.setattr(refresh, "time", FrozenWallClock(later))
    cookies, profile = refresh._unseal("refresh-1", sealed)

    by_name = {c.name: c for c in cookies}
    assert [c.name for c in cookies] == ["access_token", "refresh_token", "old", "dated"]
    assert by_name["access_token"].value == "a2"
    assert by_name["access_token"].max_age in (89, 90)  # 120 s issued, 30 s ago
    assert by_name["access_token"].path == "/"
    assert by_name["refresh_token"].max_age is None  # a session cookie stays one
    assert by_name["refresh_token"].path == "/auth/refresh"
    assert by_name["old"].max_age == 0 and by_name["old"].deletes
    assert by_name["dated"].max_age in (19, 20)
    assert profile is None


def test_a_sealed_cookie_past_its_expiry_comes_back_with_one_second_not_zero(monkeypatch):
    """Zero would delete it: a cookie that expired while sealed gets the shortest life instead."""
    from accounts.cookies import BackendCookie

    sealed = refresh._seal(
        refresh._fernet("refresh-1"),
        [BackendCookie(name="access_token", value="a2", max_age=10)],
        None,
    )
    monkeypatch.setattr(refresh, "time", FrozenWallClock(time.time() + 60))
    (cookie,), _ = refresh._unseal("refresh-1", sealed)
    assert cookie.max_age == 1


class TestPeekRoundsAndGrace:
    def test_reads_only_its_own_round(self, service, locmem_cache):
        fakes.stub_refresh(service)
        fakes.stub_me(service)
        assert run(round_=1).state == refresh.OK
        assert refresh.peek("refresh-1", binding=BINDING) is None
        assert refresh.peek("refresh-1", binding=BINDING, round_=1).state == refresh.OK

    def test_gives_a_finished_outcome_to_its_session_only_after_the_grace(
        self, service, locmem_cache
    ):
        fakes.stub_refresh(service)
        fakes.stub_me(service)
        run()
        entry = locmem_cache.get(key())
        locmem_cache.set(key(), {**entry, "finished_at": time.time() - 21}, 600)
        assert refresh.peek("refresh-1", binding=BINDING).state == refresh.OK
        assert refresh.peek("refresh-1", binding="another").state == refresh.FOREIGN

    def test_each_refusal_to_hand_over_the_pair_is_logged(self, service, locmem_cache, caplog):
        fakes.stub_refresh(service)
        fakes.stub_me(service)
        run()
        entry = locmem_cache.get(key())
        locmem_cache.set(key(), {**entry, "finished_at": time.time() - 21}, 600)
        assert refresh.peek("refresh-1", binding="another").state == refresh.FOREIGN
        locmem_cache.set(key(), {**entry, "sealed": b"not a fernet token"}, 600)
        assert refresh.peek("refresh-1", binding=BINDING).state == refresh.UNKNOWN
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == [
            "A spent refresh token was presented by another session",
            "An unreadable refresh outcome; its session will end",
        ]


# --- a second presentation, and what the metrics count (accounts/ops/metrics.py) -----------


def counted(metric, *labels) -> float:
    from accounts.ops import metrics

    series = getattr(metrics, metric)
    return (series.labels(*labels) if labels else series)._value.get()


def test_a_token_marked_presented_is_never_sent_again(service, locmem_cache, settings, caplog):
    """The claim was won twice (an entry the cache lost): the mark stops the second call."""
    settings.AUTH_METRICS = True
    before = counted("REUSE_SUSPECT")
    locmem_cache.add(f"{key()}:presented", 1, 600)
    fakes.stub_refresh(service)

    assert run().state == refresh.UNKNOWN

    assert sent_refresh_tokens(service) == []
    assert counted("REUSE_SUSPECT") == before + 1
    assert "A refresh token was about to be presented twice; not sent" in caplog.messages
    # The outcome is kept under the token's own key, for the token's life: every
    # other tab holding it learns "unknown" without a call.
    kept = locmem_cache.get(key())
    assert (kept["state"], kept["binding"]) == (refresh.UNKNOWN, BINDING)
    assert kept_for(locmem_cache, key()) == (True, False)
    assert run().state == refresh.UNKNOWN
    assert sent_refresh_tokens(service) == []


def test_the_first_call_marks_the_token_presented_for_its_life(service, locmem_cache):
    fakes.stub_refresh(service)
    fakes.stub_me(service)

    assert run().state == refresh.OK
    assert locmem_cache.get(f"{key()}:presented") == 1
    assert kept_for(locmem_cache, f"{key()}:presented") == (True, False)  # as long as the claim


def kept_for(cache, cache_key: str) -> tuple[bool, bool]:
    """Whether `cache_key` is still there 590 s and 610 s from now (run() keeps for 600 s)."""
    now = time.time()
    found = []
    for later in (590, 610):
        with mock.patch("django.core.cache.backends.locmem.time.time", return_value=now + later):
            found.append(cache.has_key(cache_key))
    return tuple(found)


def test_a_cache_that_cannot_mark_leaves_the_claim_to_guard(service, locmem_cache, monkeypatch):
    class NoMarks:
        def __getattr__(self, name):
            return getattr(locmem_cache, name)

        def add(self, cache_key, *args, **kwargs):
            if cache_key.endswith(":presented"):
                raise ConnectionError("cache down")
            return locmem_cache.add(cache_key, *args, **kwargs)

    monkeypatch.setattr(refresh, "cache", NoMarks())
    fakes.stub_refresh(service)
    fakes.stub_me(service)

    assert run().state == refresh.OK
    assert sent_refresh_tokens(service) == ["refresh-1"]


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        ({"status": 200}, "ok"),
        ({"status": 401}, "refused"),
        ({"body": fakes.connection_refused()}, "transient"),
        ({"status": 504}, "unknown"),
    ],
)
def test_each_refresh_call_is_counted_by_its_outcome(service, settings, answer, outcome):
    settings.AUTH_METRICS = True
    before = counted("REFRESH_CALLS", outcome)
    if answer.get("status") == 200:
        fakes.stub_refresh(service)
        fakes.stub_me(service)
    else:
        service.post(f"{fakes.BASE}/auth/refresh", **answer)

    with contextlib.suppress(BackendUnavailable):
        run()

    assert counted("REFRESH_CALLS", outcome) == before + 1


def test_callers_that_share_a_call_are_counted_served(service, gates, settings):
    settings.AUTH_METRICS = True
    before = {how: counted("REFRESH_SERVED", how) for how in ("shared", "waited")}
    gate = gates()
    fakes.stub_held_refresh(service, gate)
    fakes.stub_me(service)
    claim = refresh.start("refresh-1", binding=BINDING, round_=0, keep_for=600)
    waiter = threading.Thread(target=run)
    waiter.start()
    time.sleep(0.1)  # the waiter polls the pending entry
    gate.open()
    claim.future.result(5)
    waiter.join(5)

    assert run().state == refresh.OK  # finished already: shared at once
    assert counted("REFRESH_SERVED", "waited") == before["waited"] + 1
    assert counted("REFRESH_SERVED", "shared") == before["shared"] + 1
