"""accounts.cache.ResilientCache, rule by rule, with a primary that fails on demand.

tests/test_degradation.py proves the failover over a real Redis, stopped and
started, and the database cache. Here both caches are in-process (a
LocMemCache that raises what redis-py raises while it is "down", and a plain
LocMemCache as the fallback) and every clock the module reads is a stopped
one the test moves, so each rule of the module docstring is checked on its
own and no test waits out a breaker or a window.
"""

import logging

import pytest
import redis
from django.core.cache import caches
from django.core.cache.backends import base as cache_base
from django.core.cache.backends import locmem
from django.core.cache.backends.locmem import LocMemCache
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError

from accounts import cache as shared_cache
from accounts import pacing
from accounts.cache import FAILOVER_KEY, HEALTH_KEY, ResilientCache, SwitchBack, cache_health

UNREACHABLE = "Shared cache 'primary' unreachable"
BACK = "Shared cache answers again; back from the fallback"
DOWN: set[str] = set()  # LOCATIONs of the FlakyCaches that are down
CALLED = (
    "get",
    "get_many",
    "has_key",
    "add",
    "set",
    "set_many",
    "touch",
    "incr",
    "delete",
    "delete_many",
    "clear",
)


class FlakyCache(LocMemCache):
    """A LocMemCache that raises redis-py's ConnectionError while its LOCATION is DOWN."""

    def __init__(self, name, params):
        super().__init__(name, params)
        self.location = name
        self.calls: list[str] = []


def _flaky(name):
    def method(self, *args, **kwargs):
        self.calls.append(name)
        if self.location in DOWN:
            raise redis.exceptions.ConnectionError("Connection refused")
        return getattr(LocMemCache, name)(self, *args, **kwargs)

    return method


for _name in CALLED:
    setattr(FlakyCache, _name, _flaky(_name))


class Clock:
    """Stands for the `time` module: wall clock and monotonic clock, moved by the test."""

    def __init__(self):
        self.now = 1_800_000_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now - 1_700_000_000.0

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    for module in (shared_cache, pacing, locmem, cache_base):
        monkeypatch.setattr(module, "time", clock)
    return clock


@pytest.fixture
def make(settings, monkeypatch, request, clock):
    """Return a maker of the default cache: a ResilientCache over "primary" and "fallback"."""
    monkeypatch.setattr(shared_cache, "_circuits", {})
    DOWN.clear()
    location = request.node.name

    def make(**options) -> ResilientCache:
        settings.CACHES = {
            "default": {
                "BACKEND": "accounts.cache.ResilientCache",
                "OPTIONS": {"PRIMARY": "primary", "FALLBACK": "fallback", **options},
            },
            "primary": {"BACKEND": f"{__name__}.FlakyCache", "LOCATION": f"p-{location}"},
            "fallback": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "LOCATION": f"f-{location}",
            },
        }
        for alias in ("primary", "fallback"):
            caches[alias].clear()
        caches["primary"].calls.clear()
        return caches["default"]

    yield make
    DOWN.clear()


@pytest.fixture
def shared(make):
    return make()


def primary():
    return caches["primary"]


def fallback():
    return caches["fallback"]


def down():
    DOWN.add(primary().location)


def up():
    DOWN.discard(primary().location)


def fail_over(shared, clock):
    """Lose the primary for one call, then have it back and the breaker closed again."""
    down()
    shared.get("anything")
    up()
    clock.advance(shared.retry_after)
    shared.get("anything")
    assert shared._circuit.open is False


# --- configuration ------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["PRIMARY", "FALLBACK"])
def test_each_alias_is_required_by_name(missing):
    options = {"PRIMARY": "redis", "FALLBACK": "database"}
    del options[missing]
    with pytest.raises(ImproperlyConfigured) as raised:
        ResilientCache("", {"OPTIONS": options})
    assert str(raised.value) == (
        f"accounts.cache.ResilientCache needs OPTIONS['{missing}'], a CACHES alias."
    )


def test_an_empty_alias_is_as_good_as_none():
    with pytest.raises(ImproperlyConfigured, match="OPTIONS\\['FALLBACK'\\]"):
        ResilientCache("", {"OPTIONS": {"PRIMARY": "redis", "FALLBACK": ""}})


def test_without_options_it_names_the_first_alias_it_needs():
    with pytest.raises(ImproperlyConfigured, match="OPTIONS\\['PRIMARY'\\]"):
        ResilientCache("", {})


def test_two_caches_over_the_same_aliases_share_one_breaker(make):
    shared = make()

    def over(primary, fallback):
        return ResilientCache("", {"OPTIONS": {"PRIMARY": primary, "FALLBACK": fallback}})

    assert over("primary", "fallback")._circuit is shared._circuit
    assert over("fallback", "primary")._circuit is not shared._circuit
    assert over("other", "fallback")._circuit is not shared._circuit
    assert over("primary", "other")._circuit is not shared._circuit


# --- the breaker --------------------------------------------------------------------


def test_a_failed_primary_is_skipped_five_seconds_by_default(shared, clock):
    down()
    assert shared.get("k", "default") == "default"
    up()
    primary().set("k", "primary value")
    primary().calls.clear()
    clock.advance(4.9)
    assert shared.get("k") is None  # the fallback's answer: the primary is not asked
    assert primary().calls == []
    clock.advance(0.1)
    assert shared.get("k") == "primary value"
    assert shared._circuit.open is False


def test_retry_after_is_read_from_the_options(make, clock):
    shared = make(RETRY_AFTER="0.5")
    down()
    shared.get("k")
    up()
    primary().calls.clear()
    clock.advance(0.4)
    shared.get("k")
    assert primary().calls == []
    clock.advance(0.1)
    shared.get("k")
    assert primary().calls == ["get"]


def test_once_the_wait_is_over_one_caller_tries_the_primary_and_the_rest_wait_again(shared, clock):
    down()
    shared.get("k")
    clock.advance(5)
    primary().calls.clear()
    shared.get("k")  # this one tries, and fails again
    shared.get("k")
    assert primary().calls == ["get"]
    clock.advance(4.9)
    shared.get("k")
    assert primary().calls == ["get"]
    clock.advance(0.1)
    shared.get("k")
    assert primary().calls == ["get", "get"]


def test_the_breaker_stays_open_for_callers_while_one_tries(shared, clock):
    circuit = shared._circuit
    down()
    shared.get("k")
    clock.advance(5)
    assert circuit.allows_primary(5.0) is True
    assert circuit.allows_primary(5.0) is False
    assert circuit.open is True  # only an answer from the primary closes it


def test_the_failover_warning_names_both_caches_and_the_error_once_a_minute(shared, clock, caplog):
    with caplog.at_level(logging.INFO, logger="accounts.cache"):
        down()
        for _ in range(3):
            shared.get("k")
            clock.advance(5)
        clock.advance(45)  # 60 s after the first warning
        shared.get("k")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        f"{UNREACHABLE} (ConnectionError: Connection refused); using the 'fallback' cache"
    ] * 2


def test_the_primary_answering_again_closes_the_breaker_and_says_so_once(shared, clock, caplog):
    with caplog.at_level(logging.INFO, logger="accounts.cache"):
        shared.get("k")  # never open: nothing to say
        down()
        shared.get("k")
        up()
        clock.advance(5)
        shared.get("k")
        shared.get("k")
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == [BACK]
    assert shared._circuit.open is False


def test_a_missing_key_for_incr_is_not_an_outage(shared):
    with pytest.raises(ValueError):
        shared.incr("never-set")
    assert shared._circuit.open is False
    assert fallback().get(FAILOVER_KEY) is None


# --- the failover marker ------------------------------------------------------------


def test_the_first_call_on_the_fallback_writes_the_marker_kept_eight_days(shared, clock):
    down()
    shared.set("k", "v", 60)
    assert fallback().get(FAILOVER_KEY) == clock.now
    assert fallback().get("k") == "v"
    clock.advance(8 * 24 * 3600 - 1)
    assert fallback().get(FAILOVER_KEY) is not None
    clock.advance(1)
    assert fallback().get(FAILOVER_KEY) is None


def test_failover_memory_is_read_from_the_options(make, clock):
    shared = make(FAILOVER_MEMORY="100")
    down()
    shared.get("k")
    clock.advance(99)
    assert fallback().get(FAILOVER_KEY) is not None
    clock.advance(1)
    assert fallback().get(FAILOVER_KEY) is None


def test_the_marker_is_rewritten_every_two_seconds_while_on_the_fallback(shared, clock):
    down()
    first = clock.now
    shared.get("k")
    clock.advance(1.9)
    shared.get("k")
    assert fallback().get(FAILOVER_KEY) == first
    clock.advance(0.1)
    shared.get("k")
    assert fallback().get(FAILOVER_KEY) == first + 2


def test_marker_interval_is_read_from_the_options(make, clock):
    shared = make(MARKER_INTERVAL="0.5", RETRY_AFTER="0")
    down()
    first = clock.now
    shared.get("k")
    clock.advance(0.4)
    shared.get("k")
    assert fallback().get(FAILOVER_KEY) == first
    clock.advance(0.1)
    shared.get("k")
    assert fallback().get(FAILOVER_KEY) == first + 0.5


def test_without_a_marker_the_primary_alone_counts(shared):
    fallback().set("k", "old")
    assert shared.switch_back() is SwitchBack.NONE
    assert shared.get("k") is None
    assert shared.get_many(["k"]) == {}
    assert shared.has_key("k") is False
    assert shared.add("k", "new") is True
    assert primary().get("k") == "new"


def test_for_a_minute_after_the_marker_it_mirrors_then_it_trails(shared, clock):
    fallback().set(FAILOVER_KEY, clock.now)
    assert shared.switch_back() is SwitchBack.MIRROR
    clock.advance(59.9)
    assert shared.switch_back() is SwitchBack.MIRROR
    clock.advance(0.1)
    assert shared.switch_back() is SwitchBack.TRAILING


def test_mirror_window_is_read_from_the_options(make, clock):
    shared = make(MIRROR_WINDOW="10")
    fallback().set(FAILOVER_KEY, clock.now)
    clock.advance(9.9)
    assert shared.switch_back() is SwitchBack.MIRROR
    clock.advance(0.1)
    assert shared.switch_back() is SwitchBack.TRAILING


def test_the_marker_is_read_again_only_every_marker_interval(shared, clock):
    assert shared.switch_back() is SwitchBack.NONE
    fallback().set(FAILOVER_KEY, clock.now)  # another process fails over
    clock.advance(1.9)
    assert shared.switch_back() is SwitchBack.NONE
    clock.advance(0.1)
    assert shared.switch_back() is SwitchBack.MIRROR
    fallback().delete(FAILOVER_KEY)  # the fallback was cleared
    clock.advance(2)
    assert shared.switch_back() is SwitchBack.NONE


def test_a_fallback_that_cannot_be_read_leaves_the_last_reading(shared, clock, monkeypatch, caplog):
    fallback().set(FAILOVER_KEY, clock.now)
    assert shared.switch_back() is SwitchBack.MIRROR

    def broken(*args, **kwargs):
        raise DatabaseError("no such table: django_cache")

    monkeypatch.setattr(fallback(), "get", broken)
    clock.advance(2)
    with caplog.at_level(logging.DEBUG, logger="accounts.cache"):
        assert shared.switch_back() is SwitchBack.MIRROR
    assert caplog.messages == ["Failover marker not read: DatabaseError"]


# --- reads --------------------------------------------------------------------------


def test_reads_are_served_by_the_fallback_while_the_primary_is_down(shared):
    fallback().set_many({"a": 1, "b": 2})
    down()
    assert shared.get("a") == 1
    assert shared.get("missing", "default") == "default"
    assert shared.get_many(iter(["a", "b", "missing"])) == {"a": 1, "b": 2}
    assert shared.has_key("b") is True
    assert shared.has_key("missing") is False


def test_after_a_failover_keys_the_primary_lacks_are_read_from_the_fallback(shared, clock):
    fail_over(shared, clock)
    fallback().set_many({"a": "fallback a", "b": "fallback b"})
    primary().set("a", "primary a")
    assert shared.get("a") == "primary a"
    assert shared.get("b") == "fallback b"
    assert shared.get("missing", "default") == "default"
    assert shared.get_many(iter(["a", "b", "missing"])) == {"a": "primary a", "b": "fallback b"}
    assert shared.has_key("a") is True
    assert shared.has_key("b") is True
    assert shared.has_key("missing") is False


def test_a_value_that_is_none_in_the_primary_is_not_looked_up_elsewhere(shared, clock):
    fail_over(shared, clock)
    primary().set("k", None)
    fallback().set("k", "stale")
    assert shared.get("k", "default") is None


def test_reads_pass_the_version_on(shared, clock):
    primary().set("k", "v2", version=2)
    assert shared.get("k", version=2) == "v2"
    assert shared.get("k") is None
    assert shared.get_many(["k"], version=2) == {"k": "v2"}
    assert shared.has_key("k", version=2) is True
    fail_over(shared, clock)
    fallback().set("f", "fv", version=3)
    assert shared.get("f", version=3) == "fv"
    assert shared.get_many(["f"], version=3) == {"f": "fv"}
    assert shared.has_key("f", version=3) is True
    down()
    assert shared.get("f", version=3) == "fv"
    assert shared.get_many(["f"], version=3) == {"f": "fv"}
    assert shared.has_key("f", version=3) is True


# --- writes -------------------------------------------------------------------------


def test_with_the_primary_up_writes_go_to_it_alone(shared):
    assert shared.add("claim", "mine", 60) is True
    assert shared.add("claim", "theirs", 60) is False
    shared.set("k", "v", 60)
    assert shared.set_many({"a": 1}, 60) == []
    assert shared.touch("k", 120) is True
    assert shared.touch("missing", 120) is False
    assert primary().get_many(["claim", "k", "a"]) == {"claim": "mine", "k": "v", "a": 1}
    assert fallback().get_many(["claim", "k", "a", FAILOVER_KEY]) == {}


def test_with_the_primary_down_writes_go_to_the_fallback(shared):
    down()
    assert shared.add("claim", "mine", 60) is True
    assert shared.add("claim", "theirs", 60) is False
    shared.set("k", "v", 60)
    assert shared.set_many({"a": 1, "b": 2}, 60) == []
    assert shared.touch("k", 120) is True
    assert shared.incr("a", 5) == 6
    assert shared.delete("b") is True
    assert shared.delete("b") is False
    assert fallback().get_many(["claim", "k", "a", "b"]) == {"claim": "mine", "k": "v", "a": 6}
    shared.delete_many(iter(["claim", "k"]))
    assert fallback().get_many(["claim", "k", "a"]) == {"a": 6}


def test_timeouts_reach_the_cache_that_stores(shared, clock):
    shared.set("k", "v", 10)
    shared.set_many({"m": 1}, 10)
    shared.add("a", 1, 10)
    down()
    shared.set("fk", "v", 10)
    shared.set_many({"fm": 1}, 10)
    shared.add("fa", 1, 10)
    shared.set("ft", "v", 10)
    shared.touch("ft", 30)
    up()
    clock.advance(10)
    assert primary().get_many(["k", "m", "a"]) == {}
    assert fallback().get_many(["fk", "fm", "fa", "ft"]) == {"ft": "v"}
    clock.advance(20)
    assert fallback().get("ft") is None


def test_touch_gives_the_primary_the_new_timeout(shared, clock):
    primary().set("k", "v", 10)
    assert shared.touch("k", 30) is True
    clock.advance(29)
    assert primary().get("k") == "v"
    clock.advance(1)
    assert primary().get("k") is None


def test_writes_pass_the_version_on(shared):
    shared.add("a", 1, 60, version=2)
    shared.set("s", 1, 60, version=2)
    shared.set_many({"m": 1}, 60, version=2)
    assert primary().get_many(["a", "s", "m"], version=2) == {"a": 1, "s": 1, "m": 1}
    assert shared.touch("s", 60, version=2) is True
    assert shared.incr("s", 1, version=2) == 2
    assert shared.delete("s", version=2) is True
    shared.delete_many(["m"], version=2)
    assert primary().get_many(["a", "s", "m"], version=2) == {"a": 1}
    down()
    shared.add("fa", 1, 60, version=3)
    shared.set("fs", 1, 60, version=3)
    shared.set_many({"fm": 1}, 60, version=3)
    assert fallback().get_many(["fa", "fs", "fm"], version=3) == {"fa": 1, "fs": 1, "fm": 1}
    assert shared.touch("fs", 60, version=3) is True
    assert shared.incr("fs", 1, version=3) == 2
    assert shared.delete("fs", version=3) is True
    shared.delete_many(["fm"], version=3)
    assert fallback().get_many(["fa", "fs", "fm"], version=3) == {"fa": 1}


def test_in_the_mirror_window_claims_meet_in_the_fallback_first(shared, clock):
    fail_over(shared, clock)
    assert shared.switch_back() is SwitchBack.MIRROR
    fallback().add("theirs", "pending")
    assert shared.add("theirs", "mine", 60) is False
    assert primary().get("theirs") is None  # not claimed in the primary either
    assert shared.add("mine", "pending", 60) is True
    assert fallback().get("mine") == "pending"
    assert primary().get("mine") == "pending"


def test_in_the_mirror_window_a_claim_made_with_the_primary_down_holds(shared, clock):
    fail_over(shared, clock)
    down()
    clock.advance(5)  # the marker is due again, the breaker lets one call try
    assert shared.add("mine", "pending", 60) is True
    assert fallback().get("mine") == "pending"
    assert fallback().get(FAILOVER_KEY) == clock.now


def test_in_the_mirror_window_the_primarys_holder_is_shown_in_the_fallback(shared, clock):
    fail_over(shared, clock)
    primary().set("held", "primary outcome", 60)
    assert shared.add("held", "mine", 60, version=None) is False
    assert fallback().get("held") == "primary outcome"


def test_in_the_mirror_window_a_primary_entry_gone_before_it_is_read_leaves_no_claim(
    shared, monkeypatch, clock
):
    fail_over(shared, clock)
    primary().set("held", "primary outcome", 60)
    # It expires between the primary's refused add and the read that follows.
    monkeypatch.setattr(primary(), "get", lambda key, default=None, version=None: default)
    assert shared.add("held", "mine", 60) is False
    assert fallback().has_key("held") is False


def test_after_the_mirror_window_a_fallback_claim_still_stops_a_second(shared, clock):
    fail_over(shared, clock)
    fallback().add("claimed-during", "pending", 3600)
    clock.advance(60)
    assert shared.switch_back() is SwitchBack.TRAILING
    assert shared.add("claimed-during", "again", 60) is False
    assert primary().get("claimed-during") is None
    assert shared.add("new", "pending", 60) is True
    assert primary().get("new") == "pending"
    assert fallback().get("new") is None


def test_in_the_mirror_window_writes_reach_both_caches(shared, clock):
    fail_over(shared, clock)
    shared.set("k", "v", 60)
    assert shared.set_many({"a": 1}, 60) == []
    assert primary().get_many(["k", "a"]) == {"k": "v", "a": 1}
    assert fallback().get_many(["k", "a"]) == {"k": "v", "a": 1}
    clock.advance(60)  # trailing: the primary alone
    shared.set("k2", "v", 60)
    shared.set_many({"a2": 1}, 60)
    assert fallback().get_many(["k2", "a2"]) == {}
    assert primary().get_many(["k2", "a2"]) == {"k2": "v", "a2": 1}


def test_touch_reaches_the_fallback_when_mirroring_or_when_the_primary_lacks_the_key(shared, clock):
    fail_over(shared, clock)
    primary().set("both", 1, 10)
    fallback().set("both", 1, 10)
    fallback().set("only-fallback", 1, 10)
    assert shared.touch("both", 100) is True
    assert shared.touch("only-fallback", 100) is True
    assert shared.touch("nowhere", 100) is False
    clock.advance(60)  # trailing
    primary().set("p", 1, 10)
    fallback().set("p", 1, 10)
    assert shared.touch("p", 100) is True
    clock.advance(10)
    assert fallback().get_many(["both", "only-fallback", "p"]) == {"both": 1, "only-fallback": 1}
    assert primary().get_many(["both", "p"]) == {"both": 1, "p": 1}


def test_without_a_failover_touch_stays_on_the_primary(shared):
    fallback().set("k", 1)
    assert shared.touch("k", 100) is False


def test_incr_of_a_key_counted_during_the_outage_continues_in_the_fallback(shared, clock):
    fail_over(shared, clock)
    fallback().set("count", 3)
    assert shared.incr("count", 2) == 5
    assert fallback().get("count") == 5
    primary().set("count", 10)
    assert shared.incr("count") == 11


def test_deletes_reach_both_caches_after_a_failover(shared, clock):
    fallback().set("k", "fallback")
    assert shared.delete("k") is False  # never failed over: the fallback is not asked
    assert fallback().get("k") == "fallback"
    fail_over(shared, clock)
    clock.advance(60)  # even trailing
    primary().set("both", 1)
    fallback().set_many({"both": 1, "k": "fallback", "m": 1, "n": 1})
    assert shared.delete("k") is True
    assert shared.delete("both") is True
    assert shared.delete("nowhere") is False
    primary().set_many({"m": 1, "n": 1})
    shared.delete_many(iter(["m", "n"]))
    assert fallback().get_many(["k", "both", "m", "n"]) == {}
    assert primary().get_many(["both", "m", "n"]) == {}


def test_without_a_failover_delete_many_leaves_the_fallback_alone(shared):
    fallback().set("k", 1)
    primary().set("k", 1)
    shared.delete_many(["k"])
    assert fallback().get("k") == 1
    assert primary().get("k") is None


def test_clear_empties_both_caches_and_forgets_the_failover(shared, clock):
    fail_over(shared, clock)
    primary().set("p", 1)
    fallback().set("f", 1)
    shared.clear()
    assert primary().get("p") is None
    assert fallback().get_many(["f", FAILOVER_KEY]) == {}


def test_clear_empties_the_fallback_even_with_the_primary_down(shared):
    fallback().set("f", 1)
    down()
    shared.clear()
    assert fallback().get("f") is None


def test_closing_it_leaves_both_caches_usable(shared):
    shared.close()
    shared.set("k", "v")
    assert shared.get("k") == "v"


# --- health -------------------------------------------------------------------------


def test_health_asks_the_primary_itself_not_the_breaker(shared, caplog):
    assert cache_health() == "ok"
    assert primary().calls[-1] == "has_key"
    down()
    with caplog.at_level(logging.WARNING, logger="accounts.cache"):
        assert cache_health() == "unavailable"
    assert caplog.messages[-1] == (
        "Health check: cache unavailable: ConnectionError: Connection refused"
    )
    up()
    assert shared._circuit.open is False  # health never trips the breaker
    shared.get("k")
    down()
    shared.get("k")  # the breaker opens
    up()
    assert cache_health() == "ok"


def test_health_of_a_plain_cache_asks_it(locmem_cache):
    assert cache_health() == "ok"
    assert HEALTH_KEY not in locmem_cache._cache


def test_after_a_failover_the_fallback_gets_the_same_timeouts_and_versions(shared, clock):
    fail_over(shared, clock)  # mirroring
    shared.set_many({"m": 1}, 10, version=2)
    fallback().set("t", 1, 10, version=2)
    assert shared.touch("t", 30, version=2) is True
    assert fallback().get_many(["m", "t"], version=2) == {"m": 1, "t": 1}
    fallback().set("count", 3, version=2)
    assert shared.incr("count", 2, version=2) == 5
    fallback().set("gone", 1, version=2)
    shared.delete_many(["gone"], version=2)
    assert fallback().get("gone", version=2) is None
    clock.advance(10)
    assert fallback().get_many(["m", "t"], version=2) == {"t": 1}
    clock.advance(20)
    assert fallback().get("t", version=2) is None


def test_claims_in_the_mirror_window_keep_their_timeout_and_version(shared, clock):
    fail_over(shared, clock)
    assert shared.add("mine", "pending", 10, version=2) is True
    assert fallback().get("mine", version=2) == "pending"
    assert primary().get("mine", version=2) == "pending"
    fallback().add("theirs", "pending", 600, version=2)
    assert shared.add("theirs", "again", 60, version=2) is False
    primary().set("held", "primary outcome", 600, version=2)
    assert shared.add("held", "mine", 10, version=2) is False
    assert fallback().get("held", version=2) == "primary outcome"
    clock.advance(10)
    assert fallback().get_many(["mine", "held"], version=2) == {}
    assert primary().get("mine", version=2) is None


def test_a_claim_whose_primary_entry_is_gone_is_taken_back_in_its_version(
    shared, monkeypatch, clock
):
    fail_over(shared, clock)
    primary().set("held", "primary outcome", 60, version=2)
    monkeypatch.setattr(primary(), "get", lambda key, default=None, version=None: default)
    assert shared.add("held", "mine", 60, version=2) is False
    assert fallback().has_key("held", version=2) is False


def test_after_the_mirror_window_a_claim_in_another_version_is_its_own(shared, clock):
    fail_over(shared, clock)
    fallback().add("claimed-during", "pending", 3600, version=2)
    clock.advance(60)
    assert shared.add("claimed-during", "again", 60, version=2) is False
    assert shared.add("claimed-during", "again", 60) is True


def test_a_claim_with_the_primary_down_keeps_its_timeout(shared, clock):
    down()
    assert shared.add("k", "v", 10) is True
    clock.advance(10)
    assert fallback().get("k") is None


def test_writes_and_deletes_in_the_mirror_window_keep_their_timeout_and_version(shared, clock):
    fail_over(shared, clock)
    shared.set("k", "v", 10, version=2)
    assert fallback().get("k", version=2) == "v"
    fallback().set("d", 1, version=2)
    assert shared.delete("d", version=2) is True
    assert fallback().get("d", version=2) is None
    clock.advance(10)
    assert fallback().get("k", version=2) is None


def test_the_process_that_fails_over_knows_it_before_reading_the_marker(shared):
    down()
    shared.get("k")
    up()
    fallback().delete(FAILOVER_KEY)  # not read again within MARKER_INTERVAL anyway
    assert shared.switch_back() is SwitchBack.MIRROR


def test_the_redis_options_a_project_sets_reach_redis_py():
    """Short socket timeouts are what keep a dead Redis from stalling each call."""
    from accounts.cache import RedisCache

    cache = RedisCache(
        "redis://127.0.0.1:6379/0",
        {"OPTIONS": {"socket_timeout": 0.25, "socket_connect_timeout": 0.5}},
    )
    pool = cache._cache.get_client(write=True).connection_pool  # no connection is made
    assert pool.connection_kwargs["socket_timeout"] == 0.25
    assert pool.connection_kwargs["socket_connect_timeout"] == 0.5
