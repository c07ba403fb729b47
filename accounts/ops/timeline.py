"""The sign-in path's last hour, per minute, shared by every worker: the health page's data.

`count(series, label)` and `observe(series, label, seconds)` (called by
accounts/ops/metrics.py, with each event it gives Prometheus) add to a buffer in
this process, a dict under a lock: they cost a dictionary update and never
raise. The buffer goes to the shared Django cache (Redis in production, the
database cache otherwise, so every worker of every server adds to the same
numbers) at most once every FLUSH_INTERVAL seconds: on the first count after
the interval, at the end of a request once the interval has passed
(`request_finished`: the write happens after the response has gone), from a
timer when nothing else comes (a worker that goes quiet leaves nothing
behind), and on `flush()`. Not after every request: each write is several
cache round trips (an increment and an expiry per key), which cost a
proxied call a fifth of its app CPU when made every time (bench/README.md,
issue 23).

Keys, one per minute bucket, kept for KEEP seconds:

    accounts:timeline:<unix minute>:<series>:<label>           events
    accounts:timeline:<unix minute>:<series>:<label>:<bucket>  events that took that long

A bucket is named by its upper bound as `/metrics` writes `le` ("0.25",
"120.0", "+Inf"), for the histograms of accounts/ops/events.py (HISTOGRAMS):
backend calls by endpoint (`latency`) and requests' waits for a refresh
(`refresh_wait`).

A count is increased with `cache.incr` (created with `cache.add`, and added to
if someone else created it first). Redis increments atomically; Django's
database cache reads and writes, so two processes flushing the same key in the
same instant may lose one of the two deltas, and its `incr` resets the
expiry, which is why the key is touched again afterwards. Latencies are counts
in Prometheus' own buckets (accounts/ops/events.py, LATENCY_BUCKETS) so p50 and
p95 can be computed across every worker, as `histogram_quantile` computes them
(`events.quantile`).

Labels are a small vocabulary (KNOWN, accounts/ops/events.py's). One outside it
(a new sign-out reason, a proxy status) is registered once in a slot
(`accounts:timeline:labels:<series>:<i>`, taken with an atomic `cache.add`)
so `read()` knows to look for it; past MAX_LABELS, it is counted as "other".
A cache that fails costs the numbers of that flush and one log line a
minute, never a request.
"""

import logging
import math
import re
import threading
import time
from dataclasses import dataclass

from django.core.cache import cache, caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from django.core.signals import request_finished

from ..pacing import AtMostEvery
from . import events
from .events import LATENCY

logger = logging.getLogger(__name__)

PREFIX = "accounts:timeline"
FLUSH_INTERVAL = 1.0  # seconds: the longest a count waits in a process for the shared cache
KEEP = 2 * 60 * 60  # a minute bucket outlives the hour the page shows
WINDOW = 60  # minutes read by default
MAX_LABELS = 32  # labels outside KNOWN, per series
REGISTRY_CHECK = 600  # seconds before a process checks its registered label again
GET_MANY_CHUNK = 500  # keys per get_many: the database cache reads them with one IN (...)

KNOWN: dict[str, tuple[str, ...]] = {**events.COUNTERS, **events.HISTOGRAMS}
BUCKETS = tuple(events.bucket_name(i) for i in range(len(events.LATENCY_BUCKETS) + 1))
OTHER = "other"
# Names go into cache keys: short, and nothing a cache backend would refuse.
_NAME = re.compile(r"^[a-z0-9_.-]{1,40}$")

_warn = AtMostEvery(60)


def minute_of(timestamp: float) -> int:
    """Return the unix minute a timestamp falls in."""
    return int(timestamp // 60)


def count_key(minute: int, series: str, label: str) -> str:
    return f"{PREFIX}:{minute}:{series}:{label}"


def histogram_key(minute: int, series: str, label: str, bucket: str) -> str:
    return f"{PREFIX}:{minute}:{series}:{label}:{bucket}"


def _slot_key(series: str, index: int) -> str:
    return f"{PREFIX}:labels:{series}:{index}"


class TimelineBuffer:
    """One process's counts not yet in the shared cache.

    The module keeps one (`count`, `observe`, `flush` use it); tests make two
    to stand for two processes. `clock` gives the time that picks the minute.
    """

    def __init__(self, *, clock=time.time, interval: float = FLUSH_INTERVAL):
        self.clock = clock
        self.interval = interval
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}
        self._labels: set[tuple[str, str]] = set()
        self._last_flush: float | None = None
        self._timer: threading.Timer | None = None
        self._registered: dict[tuple[str, str], tuple[str, float]] = {}

    def count(self, series: str, label: str, n: int = 1) -> None:
        n = int(n)
        if n <= 0:  # e.g. a back-channel sign-out that ended no session
            return
        series, label = _name(series), _name(label)
        self._add(count_key(minute_of(self.clock()), series, label), series, label, n)

    def observe(self, series: str, label: str, seconds: float) -> None:
        if not isinstance(seconds, int | float) or math.isnan(seconds):
            return
        series, label = _name(series), _name(label)
        bucket = BUCKETS[events.bucket_of(max(seconds, 0.0))]
        self._add(histogram_key(minute_of(self.clock()), series, label, bucket), series, label, 1)

    def _add(self, key: str, series: str, label: str, n: int) -> None:
        with self._lock:
            self._pending[key] = self._pending.get(key, 0) + n
            self._labels.add((series, label))
            wait = self._wait()
            if wait > 0 and self._timer is None:
                # Nothing may come to flush it: a timer will.
                self._timer = threading.Timer(wait, self._flush_from_timer)
                self._timer.daemon = True
                self._timer.start()
        if wait <= 0:
            self.flush()

    def _wait(self) -> float:
        """Seconds until the next flush is due (0 or less: now)."""
        if self._last_flush is None:
            return 0.0
        return self._last_flush + self.interval - time.monotonic()

    def stop(self) -> None:
        """Cancel the pending timer and drop what waits (a buffer that is done with)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None
            self._pending, self._labels = {}, set()

    def _flush_from_timer(self) -> None:
        with self._lock:
            self._timer = None
        self.flush()

    def flush_if_due(self) -> None:
        """Flush if something waits and the interval has passed since the last flush."""
        with self._lock:
            due = bool(self._pending) and self._wait() <= 0
        if due:
            self.flush()

    def flush(self) -> None:
        """Write what this process has counted to the shared cache (dropped if it fails)."""
        with self._lock:
            pending, labels = self._pending, self._labels
            self._pending, self._labels = {}, set()
            self._last_flush = time.monotonic()
        if not pending:
            return
        try:
            renames = self._register(labels)
            for key, n in pending.items():
                _increment(_renamed(key, renames), n)
        except Exception:  # noqa: BLE001 - the health page's numbers never cost a request
            if _warn.due():
                logger.warning("The health timeline could not be written", exc_info=True)

    def _register(self, labels: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Let `read()` find each label outside KNOWN; return those counted as "other"."""
        renames = {}
        now = time.monotonic()
        for series, label in labels:
            if label in KNOWN.get(series, ()) or label == OTHER:
                continue
            known = self._registered.get((series, label))
            if known is None or now - known[1] >= REGISTRY_CHECK:
                known = (_register_label(series, label), now)
                self._registered[(series, label)] = known
            if known[0] != label:
                renames[(series, label)] = known[0]
        return renames


def _name(value: str) -> str:
    value = str(value).lower()
    return value if _NAME.match(value) else OTHER


def _renamed(key: str, renames: dict[tuple[str, str], str]) -> str:
    if not renames:
        return key
    parts = key.split(":")  # accounts, timeline, minute, series, label[, bucket]
    label = renames.get((parts[3], parts[4]))
    if label is not None:
        parts[4] = label
    return ":".join(parts)


def _register_label(series: str, label: str) -> str:
    """Return the label to count under: `label` once it holds a slot, else "other"."""
    slots = [_slot_key(series, i) for i in range(MAX_LABELS)]
    for _attempt in range(3):
        taken = cache.get_many(slots)
        for key, value in taken.items():
            if value == label:
                cache.touch(key, KEEP + 3600)
                return label
        free = [key for key in slots if key not in taken]
        if not free:
            return OTHER
        if cache.add(free[0], label, KEEP + 3600):
            return label
    return OTHER


def _increment(key: str, n: int) -> None:
    try:
        cache.incr(key, n)
    except ValueError:  # no such key yet
        if cache.add(key, n, KEEP):
            return
        cache.incr(key, n)  # another process made it first
    if not _incr_keeps_expiry():
        cache.touch(key, KEEP)


def _incr_keeps_expiry() -> bool:
    # Django's Redis and local-memory caches increment in place; the database
    # cache (and any cache on BaseCache.incr) writes the key again with the
    # default timeout. ResilientCache may be on its database fallback.
    return isinstance(caches["default"], RedisCache | LocMemCache)


@dataclass(frozen=True)
class Timeline:
    """What `read()` found: per-minute counts and latency buckets, oldest minute first.

    The latency methods read backend calls by endpoint unless told another
    histogram (`series=events.REFRESH_WAIT`, label "all").
    """

    minutes: tuple[int, ...]
    counts: dict[str, dict[str, tuple[int, ...]]]  # series -> label -> one count per minute
    # series -> label -> one row of counts per minute, one count per bucket (BUCKETS)
    histograms: dict[str, dict[str, tuple[tuple[int, ...], ...]]]
    available: bool = True  # False: the cache could not be read

    def series(self, name: str) -> dict[str, tuple[int, ...]]:
        """Return the labels of `name` with any event in the window, vocabulary order first."""
        return {label: row for label, row in self.counts.get(name, {}).items() if any(row)}

    def total(self, name: str, label: str | None = None) -> int:
        rows = self.counts.get(name, {})
        return sum(sum(row) for key, row in rows.items() if label is None or key == label)

    def endpoints(self, series: str = LATENCY) -> list[str]:
        """Return the endpoints (labels of `series`) observed in the window."""
        rows = self.histograms.get(series, {})
        return [label for label, row in rows.items() if any(any(counts) for counts in row)]

    def buckets(self, endpoint: str, series: str = LATENCY) -> tuple[tuple[int, ...], ...]:
        """Return `endpoint`'s bucket counts (BUCKETS) for each minute."""
        return self.histograms.get(series, {}).get(endpoint, ())

    def calls(self, endpoint: str, series: str = LATENCY) -> tuple[int, ...]:
        return tuple(sum(row) for row in self.buckets(endpoint, series))

    def percentiles(
        self, endpoint: str, q: float, series: str = LATENCY
    ) -> tuple[float | None, ...]:
        """Return the `q` quantile of `endpoint`'s latency for each minute (None: no call)."""
        return tuple(events.quantile(row, q) for row in self.buckets(endpoint, series))

    def window_percentile(self, endpoint: str, q: float, series: str = LATENCY) -> float | None:
        """Return the `q` quantile of `endpoint`'s latency over the whole window."""
        rows = self.buckets(endpoint, series)
        total = [sum(column) for column in zip(*rows, strict=True)]
        return events.quantile(total, q) if rows else None


def read(minutes: int = WINDOW, *, now: float | None = None) -> Timeline:
    """Return the last `minutes` minutes (this one included) as every process counted them.

    This process's own buffer is flushed first. A cache that cannot be read
    gives an empty timeline with `available=False`, never an exception.
    """
    flush()
    end = minute_of(time.time() if now is None else now)
    span = tuple(range(end - minutes + 1, end + 1))
    try:
        labels = _labels()
        keys = []
        for minute in span:
            for series, names in labels.items():
                for label in names:
                    if series in events.HISTOGRAMS:
                        keys += [histogram_key(minute, series, label, b) for b in BUCKETS]
                    else:
                        keys.append(count_key(minute, series, label))
        found = _get_many(keys)
    except Exception:  # noqa: BLE001 - the page says so rather than failing
        if _warn.due():
            logger.warning("The health timeline could not be read from the cache", exc_info=True)
        return Timeline(minutes=span, counts={}, histograms={}, available=False)

    def number(key: str) -> int:
        value = found.get(key, 0)
        return value if isinstance(value, int) else 0

    counts = {
        series: {label: tuple(number(count_key(m, series, label)) for m in span) for label in names}
        for series, names in labels.items()
        if series not in events.HISTOGRAMS
    }
    histograms = {
        series: {
            label: tuple(
                tuple(number(histogram_key(m, series, label, b)) for b in BUCKETS) for m in span
            )
            for label in names
        }
        for series, names in labels.items()
        if series in events.HISTOGRAMS
    }
    return Timeline(minutes=span, counts=counts, histograms=histograms)


def _labels() -> dict[str, list[str]]:
    """Return every series' labels: the vocabulary, registered ones, and "other"."""
    slots = {series: [_slot_key(series, i) for i in range(MAX_LABELS)] for series in KNOWN}
    taken = _get_many([key for keys in slots.values() for key in keys])
    labels = {}
    for series, keys in slots.items():
        names = list(KNOWN[series])
        for key in keys:
            value = taken.get(key)
            if isinstance(value, str) and value not in names:
                names.append(value)
        labels[series] = [*names, OTHER]
    return labels


def _get_many(keys: list[str]) -> dict:
    found = {}
    for start in range(0, len(keys), GET_MANY_CHUNK):
        found.update(cache.get_many(keys[start : start + GET_MANY_CHUNK]))
    return found


_buffer = TimelineBuffer()


def count(series: str, label: str, n: int = 1) -> None:
    """Count `n` events of `label` in `series` this minute; never raises."""
    try:
        _buffer.count(series, label, n)
    except Exception:  # noqa: BLE001
        if _warn.due():
            logger.warning("The health timeline could not count an event", exc_info=True)


def observe(series: str, label: str, seconds: float) -> None:
    """Put one event of `label` that took `seconds` in its bucket of `series`; never raises."""
    try:
        _buffer.observe(series, label, seconds)
    except Exception:  # noqa: BLE001
        if _warn.due():
            logger.warning("The health timeline could not record a latency", exc_info=True)


def flush() -> None:
    """Write this process's buffered counts to the shared cache now; never raises."""
    try:
        _buffer.flush()
    except Exception:  # noqa: BLE001
        if _warn.due():
            logger.warning("The health timeline could not be flushed", exc_info=True)


def _flush_at_request_end(**kwargs) -> None:
    try:
        _buffer.flush_if_due()
    except Exception:  # noqa: BLE001
        if _warn.due():
            logger.warning("The health timeline could not be flushed", exc_info=True)


request_finished.connect(_flush_at_request_end, dispatch_uid="accounts.ops.timeline.flush")
