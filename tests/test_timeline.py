"""accounts/ops/timeline.py: per-minute counts every process adds to, read by the health page."""

import datetime
import logging
import time

import pytest
from django.core.cache import cache
from django.core.cache.backends.base import BaseCache
from django.core.signals import request_finished
from django.db import connection
from django.utils import timezone

from accounts.ops import events, timeline
from accounts.ops.timeline import TimelineBuffer
from accounts.pacing import AtMostEvery

NOW = 1_800_000_000.0  # a fixed instant: 30,000,000 minutes since the epoch


class BrokenCache(BaseCache):
    """A cache whose every call fails, as a Redis or database that is gone would."""

    def __init__(self, location, params):
        super().__init__(params)

    def _fail(self, *args, **kwargs):
        raise ConnectionError("the cache is down")

    add = get = set = touch = delete = incr = get_many = set_many = has_key = clear = _fail


class Clock:
    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def fresh(monkeypatch, locmem_cache):
    """A private cache, an empty process buffer, and a log limiter that has not spoken yet."""
    monkeypatch.setattr(timeline, "_buffer", TimelineBuffer(interval=3600))
    monkeypatch.setattr(timeline, "_warn", AtMostEvery(60))
    return locmem_cache


def process(clock=None) -> TimelineBuffer:
    """A buffer standing for one worker process; it flushes only when told."""
    return TimelineBuffer(clock=clock or Clock(), interval=3600)


def test_counts_from_two_processes_add_up():
    one, two = process(), process()
    one.count("refresh", "ok")
    one.count("refresh", "ok", 2)
    two.count("refresh", "ok")
    two.count("refresh_served", "shared", 4)
    two.count("refresh_served", "waited", 0)  # nothing happened: no key at all
    one.flush()
    two.flush()
    two.count("refresh", "ok")  # a second flush of a key that exists adds to it
    two.flush()

    found = timeline.read(now=NOW)

    assert found.total("refresh", "ok") == 5
    assert found.counts["refresh"]["ok"][-1] == 5  # all in the current minute
    assert found.total("refresh_served", "shared") == 4
    assert (
        cache.get(timeline.count_key(timeline.minute_of(NOW), "refresh_served", "waited")) is None
    )
    assert found.series("refresh") == {"ok": found.counts["refresh"]["ok"]}  # only labels seen
    assert len(found.minutes) == 60 and found.minutes[-1] == timeline.minute_of(NOW)


def test_nothing_reaches_the_cache_before_the_flush_after_the_interval():
    clock = Clock()
    buffer = TimelineBuffer(clock=clock, interval=5)
    buffer.count("sign_in", "ok")  # the first call of a process flushes at once
    buffer.count("sign_in", "ok")
    assert timeline.read(now=NOW).total("sign_in", "ok") == 1
    buffer._last_flush -= 5  # the interval has passed: the next call flushes
    buffer.count("sign_in", "ok")
    assert timeline.read(now=NOW).total("sign_in", "ok") == 3


def test_the_end_of_a_request_flushes_once_the_interval_has_passed(db):
    """Not after every request: each flush is several cache round trips."""
    key = timeline.count_key(timeline.minute_of(time.time()), "throttle", "refused")
    timeline.count("throttle", "refused")  # a process's first call writes at once
    timeline.count("throttle", "refused")
    timeline.observe("latency", "login", 0.02)
    assert cache.get(key) == 1

    request_finished.send(sender=None)  # within the interval: kept
    assert cache.get(key) == 1

    timeline._buffer._last_flush -= 3600  # the interval has passed
    request_finished.send(sender=None)
    assert cache.get(key) == 2
    assert timeline.read().calls("login")[-1] == 1


def test_a_process_that_goes_quiet_flushes_within_the_interval(db):
    buffer = TimelineBuffer(interval=0.2)
    key = timeline.count_key(timeline.minute_of(time.time()), "refresh", "ok")
    buffer.count("refresh", "ok")  # the first call writes at once
    buffer.count("refresh", "ok", 2)  # and nothing comes after this one
    assert cache.get(key) == 1

    deadline = time.monotonic() + 5
    while cache.get(key) != 3 and time.monotonic() < deadline:
        time.sleep(0.02)

    assert cache.get(key) == 3
    assert buffer._pending == {} and buffer._timer is None


def test_minutes_are_separate_and_old_ones_fall_out_of_the_window():
    clock = Clock()
    buffer = process(clock)
    buffer.count("sign_out", "user")
    clock.now += 60
    buffer.count("sign_out", "user", 2)
    buffer.flush()

    assert timeline.read(now=clock.now).counts["sign_out"]["user"][-2:] == (1, 2)
    an_hour_on = timeline.read(now=NOW + 59 * 60)  # the first minute is the window's oldest
    assert an_hour_on.counts["sign_out"]["user"][:2] == (1, 2)
    later = timeline.read(now=NOW + 60 * 60)
    assert later.counts["sign_out"]["user"][:1] == (2,)
    assert later.total("sign_out") == 2
    assert timeline.read(now=NOW + 61 * 60).total("sign_out") == 0


def test_buckets_expire_after_two_hours(db, settings):
    """On the database cache, whose incr writes the key again with the default timeout."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "django_cache",
        }
    }
    cache.clear()
    one, two = process(Clock(time.time())), process(Clock(time.time()))
    one.count("sign_in", "ok")
    one.flush()
    two.count("sign_in", "ok")  # an increment of the key `one` made
    two.flush()

    assert timeline.read().total("sign_in", "ok") == 2
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT expires FROM django_cache WHERE cache_key LIKE %s",
            ["%accounts:timeline:%:sign_in:ok"],
        )
        (expires,) = cursor.fetchone()
    if timezone.is_naive(expires):  # SQLite: UTC without a zone
        expires = timezone.make_aware(expires, datetime.UTC)
    left = (expires - timezone.now()).total_seconds()
    assert timeline.KEEP - 60 < left <= timeline.KEEP


def test_percentiles_come_from_the_buckets_of_every_process():
    one, two = process(), process()
    for _ in range(45):
        one.observe("latency", "refresh", 0.02)  # (0.01, 0.025]
    for _ in range(45):
        two.observe("latency", "refresh", 0.02)
    for _ in range(10):
        two.observe("latency", "refresh", 3.0)  # (2.5, 5]
    one.observe("latency", "me", 45.0)  # (30, 120]: the health page saw only "over 30 s"
    one.observe("latency", "logout", 150.0)  # beyond the last bound
    one.flush()
    two.flush()

    found = timeline.read(now=NOW)

    assert found.calls("refresh")[-1] == 100
    p50 = found.percentiles("refresh", 0.5)[-1]
    p95 = found.percentiles("refresh", 0.95)[-1]
    assert 0.01 < p50 <= 0.025
    assert 2.5 < p95 <= 5.0
    assert found.window_percentile("refresh", 0.95) == p95
    assert found.percentiles("refresh", 0.5)[0] is None  # a minute without calls
    assert found.window_percentile("me", 0.5) == pytest.approx(75.0)  # inside (30, 120]
    assert found.window_percentile("logout", 0.5) == 120.0  # past the last bound: that bound
    assert set(found.endpoints()) == {"refresh", "me", "logout"}


def test_a_latency_lands_in_the_bucket_named_as_metrics_names_it():
    buffer = process()
    buffer.observe("latency", "refresh", 0.3)  # (0.25, 0.5]
    buffer.observe("latency", "refresh", 0.5)  # an upper bound belongs to its bucket
    buffer.observe("latency", "login", 200.0)
    buffer.observe("refresh_wait", "all", 0.004)
    buffer.flush()
    minute = timeline.minute_of(NOW)

    assert cache.get(timeline.histogram_key(minute, "latency", "refresh", "0.5")) == 2
    assert cache.get(timeline.histogram_key(minute, "latency", "login", "+Inf")) == 1
    assert cache.get(timeline.histogram_key(minute, "refresh_wait", "all", "0.005")) == 1
    found = timeline.read(now=NOW)
    assert found.buckets("refresh")[-1][events.LATENCY_BUCKETS.index(0.5)] == 2
    assert found.calls("all", "refresh_wait")[-1] == 1
    assert found.endpoints("refresh_wait") == ["all"]
    assert found.endpoints() == ["login", "refresh"]  # the backend's only, vocabulary order


def test_percentile_interpolates_inside_a_bucket():
    buckets = [0] * (len(events.LATENCY_BUCKETS) + 1)
    buckets[1] = 10  # ten calls in (0.005, 0.01]
    assert events.quantile(buckets, 0.5) == pytest.approx(0.0075)
    assert events.quantile(buckets, 1.0) == pytest.approx(0.01)
    assert events.quantile([0] * len(buckets), 0.5) is None
    assert events.bucket_of(0.005) == 0
    assert events.bucket_of(0.0051) == 1
    assert events.bucket_of(31) == events.LATENCY_BUCKETS.index(120.0)
    assert events.bucket_of(121) == len(events.LATENCY_BUCKETS)


def test_a_label_outside_the_vocabulary_is_found_and_past_the_limit_counted_as_other(
    monkeypatch,
):
    monkeypatch.setattr(timeline, "MAX_LABELS", 2)
    one, two = process(), process()
    one.count("sign_out", "reason_a")
    two.count("sign_out", "reason_b")
    two.count("sign_out", "reason_a")
    one.flush()
    two.flush()
    three = process()
    three.count("sign_out", "reason_c")  # both slots are taken
    three.count("sign_out", "Not A Name!")  # never a key of its own
    three.flush()

    found = timeline.read(now=NOW)

    assert found.total("sign_out", "reason_a") == 2
    assert found.total("sign_out", "reason_b") == 1
    assert found.total("sign_out", "other") == 2
    assert "reason_c" not in found.counts["sign_out"]


def test_a_broken_cache_never_raises_and_logs_once_a_minute(db, settings, caplog):
    settings.CACHES = {"default": {"BACKEND": "tests.test_timeline.BrokenCache"}}
    caplog.set_level(logging.WARNING, logger="accounts.ops.timeline")

    for _ in range(3):
        timeline.count("refresh", "ok")
        timeline.count("sign_out", "a_new_reason")
        timeline.observe("latency", "refresh", 0.1)
        timeline.observe("latency", "refresh", float("nan"))
        timeline.flush()
        request_finished.send(sender=None)
    found = timeline.read()

    assert found.available is False and found.total("refresh") == 0
    assert found.percentiles("refresh", 0.5) == ()
    warnings = [r for r in caplog.records if r.name == "accounts.ops.timeline"]
    assert len(warnings) == 1
    assert timeline._buffer._pending == {}  # dropped, not kept growing


def test_counting_costs_no_cache_call_between_flushes(settings):
    settings.CACHES = {"default": {"BACKEND": "tests.test_timeline.BrokenCache"}}
    buffer = process()
    buffer._last_flush = time.monotonic()  # just flushed
    for _ in range(1000):
        buffer.count("refresh", "ok")  # would log if it touched the broken cache
        buffer.observe("latency", "refresh", 0.01)
    assert buffer._pending[timeline.count_key(timeline.minute_of(NOW), "refresh", "ok")] == 1000


def test_every_reason_a_session_ends_for_is_a_series_of_its_own():
    """The health page's sign-out chart names each reason, none as other."""
    from accounts.reasons import Reason

    assert timeline.KNOWN["sign_out"] == tuple(Reason)
    assert all(isinstance(label, str) for label in timeline.KNOWN["sign_out"])
