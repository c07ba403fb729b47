"""The shared cache with a fallback: Redis while it answers, the database cache when it does not.

With REDIS_URL set, `CACHES["default"]` is a `ResilientCache` over two
ordinary Django caches (config/settings/base.py): `"redis"`, the primary,
shared by every app server, and `"database"`, Django's DatabaseCache in the
app's own database, shared by every server that shares the database.

Every call goes to the primary. When the primary cannot answer (connection
refused, timeout, any Redis error), the same call is made on the fallback,
the primary is skipped for RETRY_AFTER seconds (then one call of the process
tries it again), and a warning is logged at most once a minute per process.
The callers see no difference: the refresh claims of accounts/refresh.py
become `add`s on the database cache, atomic through its primary key, so
they still coordinate every worker of every server on that database.

Switching back. Refresh outcomes are kept for the life of the token they
answer; one written to the fallback during an outage must not be forgotten
when Redis returns, or a request holding that spent token would claim it
again in Redis and present it twice. So whoever fails over writes a marker
into the fallback (`FAILOVER_KEY`, kept FAILOVER_MEMORY seconds, rewritten
every MARKER_INTERVAL seconds while the fallback is in use), and each
process reads it every MARKER_INTERVAL seconds. While it is there:

- a key the primary does not have is looked up in the fallback (`get`,
  `get_many`, `has_key`, `touch`, `incr`), and `add` answers False for a key
  the fallback holds;
- deletes reach both caches, so nothing deleted comes back from the fallback;
- for MIRROR_WINDOW seconds after the marker was last written (another
  process may still be on the fallback), `add` claims in the fallback first,
  where every process sees the claim, and writes go to both caches.

What a Redis outage still costs is in docs/architecture.md ("When the shared
cache is down").
"""

import logging
import threading
import time
from dataclasses import dataclass, field
from enum import IntEnum

import redis
from django.core.cache import caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError

from .pacing import AtMostEvery

logger = logging.getLogger(__name__)

FAILOVER_KEY = "accounts:cache:failover-at"
HEALTH_KEY = "accounts:cache:health"
# Errors that mean "the primary cannot answer now" (redis-py raises RedisError
# subclasses for refused connections, timeouts, a loading or read-only server
# and garbled answers; a socket may raise OSError). A missing key for incr is
# a ValueError and is not among them.
PRIMARY_ERRORS = (redis.exceptions.RedisError, OSError)
WARN_EVERY = 60.0

_MISSING = object()


class SwitchBack(IntEnum):
    """How much of the fallback still counts, from the failover marker."""

    NONE = 0  # never failed over (or long ago): the primary alone
    TRAILING = 1  # the fallback was used: read through to it, delete in both
    MIRROR = 2  # some process may still be on it: claim there first, write to both


@dataclass
class _Circuit:
    """Per process and primary: whether the primary is skipped, and what the marker said."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    open: bool = False
    open_until: float = 0.0  # monotonic
    warning: AtMostEvery = field(default_factory=lambda: AtMostEvery(WARN_EVERY))
    marked_at: float = float("-inf")  # monotonic: this process last wrote the marker
    checked_at: float = float("-inf")  # monotonic: this process last read the marker
    failover_at: float | None = None  # wall clock of the last failover anywhere, as last read

    def allows_primary(self, retry_after: float) -> bool:
        """Return whether to try the primary; while open, one caller per RETRY_AFTER does."""
        if not self.open:
            return True
        with self.lock:
            now = time.monotonic()
            if now < self.open_until:
                return False
            self.open_until = now + retry_after  # the others keep to the fallback meanwhile
            return True

    def trip(self, exc: Exception, *, retry_after: float, primary: str, fallback: str) -> None:
        """Skip the primary for `retry_after` seconds; warn at most once a minute."""
        with self.lock:
            now = time.monotonic()
            self.open = True
            self.open_until = now + retry_after
        if self.warning.due():
            logger.warning(
                "Shared cache %r unreachable (%s: %s); using the %r cache",
                primary,
                type(exc).__name__,
                exc,
                fallback,
            )

    def closed(self) -> None:
        """Use the primary again: it answered."""
        if self.open:
            with self.lock:
                was_open, self.open = self.open, False
            if was_open:
                logger.info("Shared cache answers again; back from the fallback")


_circuits: dict[tuple[str, str], _Circuit] = {}
_circuits_lock = threading.Lock()


def _circuit(primary: str, fallback: str) -> _Circuit:
    with _circuits_lock:
        return _circuits.setdefault((primary, fallback), _Circuit())


class ResilientCache(BaseCache):
    """A cache that serves from PRIMARY and fails over to FALLBACK, both `CACHES` aliases.

    OPTIONS: PRIMARY and FALLBACK (required); RETRY_AFTER (5 s: how long a
    primary that failed is skipped), MARKER_INTERVAL (2 s), MIRROR_WINDOW
    (60 s: longer than RETRY_AFTER plus MARKER_INTERVAL plus the clock skew
    between servers), FAILOVER_MEMORY (8 days: at least the life of a refresh
    token). Key prefixes, versions and timeouts are those of the two caches.
    Give the primary short socket timeouts: each process pays one per
    RETRY_AFTER while it is down.
    """

    def __init__(self, location, params):
        super().__init__(params)
        options = params.get("OPTIONS", {})
        for name in ("PRIMARY", "FALLBACK"):
            if not options.get(name):
                raise ImproperlyConfigured(
                    f"accounts.cache.ResilientCache needs OPTIONS[{name!r}], a CACHES alias."
                )
        self.primary_alias = options["PRIMARY"]
        self.fallback_alias = options["FALLBACK"]
        self.retry_after = float(options.get("RETRY_AFTER", 5.0))
        self.marker_interval = float(options.get("MARKER_INTERVAL", 2.0))
        self.mirror_window = float(options.get("MIRROR_WINDOW", 60.0))
        self.failover_memory = int(options.get("FAILOVER_MEMORY", 8 * 24 * 3600))
        self._circuit = _circuit(self.primary_alias, self.fallback_alias)

    @property
    def primary(self) -> BaseCache:
        return caches[self.primary_alias]

    @property
    def fallback(self) -> BaseCache:
        return caches[self.fallback_alias]

    # --- choosing the cache ---------------------------------------------------

    def _try_primary(self, method: str, *args) -> tuple[bool, object]:
        """Return (True, result) of the call on the primary, or (False, None) if it is down."""
        if not self._circuit.allows_primary(self.retry_after):
            return False, None
        try:
            result = getattr(self.primary, method)(*args)
        except PRIMARY_ERRORS as exc:
            self._circuit.trip(
                exc,
                retry_after=self.retry_after,
                primary=self.primary_alias,
                fallback=self.fallback_alias,
            )
            return False, None
        self._circuit.closed()
        return True, result

    def _on_fallback(self) -> BaseCache:
        """Return the fallback, telling every process first that it is in use."""
        circuit = self._circuit
        now = time.monotonic()
        if now - circuit.marked_at >= self.marker_interval:
            circuit.marked_at = circuit.checked_at = now
            stamp = time.time()
            # Written before the call it announces: a claim made in the
            # fallback is never there without the marker that sends others to it.
            self.fallback.set(FAILOVER_KEY, stamp, self.failover_memory)
            circuit.failover_at = stamp
        return self.fallback

    def switch_back(self) -> SwitchBack:
        """Return how far the fallback still counts (the marker, read every MARKER_INTERVAL)."""
        circuit = self._circuit
        now = time.monotonic()
        if now - circuit.checked_at >= self.marker_interval:
            circuit.checked_at = now
            try:
                circuit.failover_at = self.fallback.get(FAILOVER_KEY)
            except DatabaseError as exc:
                # Nobody can be serving from a fallback that does not answer:
                # what was last read still holds.
                logger.debug("Failover marker not read: %s", type(exc).__name__)
        if circuit.failover_at is None:
            return SwitchBack.NONE
        if time.time() - circuit.failover_at < self.mirror_window:
            return SwitchBack.MIRROR
        return SwitchBack.TRAILING

    # --- reads ------------------------------------------------------------------

    def get(self, key, default=None, version=None):
        up, value = self._try_primary("get", key, _MISSING, version)
        if not up:
            return self._on_fallback().get(key, default, version)
        if value is _MISSING and self.switch_back():
            return self.fallback.get(key, default, version)
        return default if value is _MISSING else value

    def get_many(self, keys, version=None):
        keys = list(keys)
        up, found = self._try_primary("get_many", keys, version)
        if not up:
            return self._on_fallback().get_many(keys, version)
        missing = [key for key in keys if key not in found]
        if missing and self.switch_back():
            found = {**self.fallback.get_many(missing, version), **found}
        return found

    def has_key(self, key, version=None):
        up, present = self._try_primary("has_key", key, version)
        if not up:
            return self._on_fallback().has_key(key, version)
        if not present and self.switch_back():
            return self.fallback.has_key(key, version)
        return present

    # --- writes -----------------------------------------------------------------

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        switch_back = self.switch_back()
        if switch_back is SwitchBack.MIRROR:
            return self._add_in_both(key, value, timeout, version)
        if switch_back and self.fallback.has_key(key, version):
            return False  # claimed while the primary was down
        up, added = self._try_primary("add", key, value, timeout, version)
        if not up:
            return self._on_fallback().add(key, value, timeout, version)
        return added

    def _add_in_both(self, key, value, timeout, version) -> bool:
        """Claim in the fallback, where processes still on it see it, then in the primary."""
        if not self.fallback.add(key, value, timeout, version):
            return False
        up, added = self._try_primary("add", key, value, timeout, version)
        if not up:
            self._on_fallback()  # keeps the marker fresh while this process is on the fallback
            return True
        if not added:
            # The primary's holder was first: show its entry to processes still
            # on the fallback instead of ours (none of them may claim it again).
            up, current = self._try_primary("get", key, _MISSING, version)
            if up and current is not _MISSING:
                self.fallback.set(key, current, timeout, version)
            else:
                self.fallback.delete(key, version)
        return added

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        up, _ = self._try_primary("set", key, value, timeout, version)
        if not up:
            self._on_fallback().set(key, value, timeout, version)
        elif self.switch_back() is SwitchBack.MIRROR:
            self.fallback.set(key, value, timeout, version)

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        up, failed = self._try_primary("set_many", data, timeout, version)
        if not up:
            return self._on_fallback().set_many(data, timeout, version)
        if self.switch_back() is SwitchBack.MIRROR:
            self.fallback.set_many(data, timeout, version)
        return failed

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        up, touched = self._try_primary("touch", key, timeout, version)
        if not up:
            return self._on_fallback().touch(key, timeout, version)
        switch_back = self.switch_back()
        if switch_back is SwitchBack.MIRROR or (switch_back and not touched):
            touched = self.fallback.touch(key, timeout, version) or touched
        return touched

    def incr(self, key, delta=1, version=None):
        try:
            up, value = self._try_primary("incr", key, delta, version)
        except ValueError:  # not in the primary: perhaps counted during the outage
            if not self.switch_back():
                raise
            return self.fallback.incr(key, delta, version)
        if not up:
            return self._on_fallback().incr(key, delta, version)
        return value

    def delete(self, key, version=None):
        up, deleted = self._try_primary("delete", key, version)
        if not up:
            return self._on_fallback().delete(key, version)
        if self.switch_back():
            deleted = self.fallback.delete(key, version) or deleted
        return deleted

    def delete_many(self, keys, version=None):
        keys = list(keys)
        up, _ = self._try_primary("delete_many", keys, version)
        if not up:
            self._on_fallback().delete_many(keys, version)
        elif self.switch_back():
            self.fallback.delete_many(keys, version)

    def clear(self):
        self._try_primary("clear")
        self.fallback.clear()  # the marker goes too: nothing left to remember

    def close(self, **kwargs):
        # Django closes every cache alias it opened at the end of a request,
        # the primary and the fallback among them; nothing of ours to close.
        pass


def cache_health() -> str:
    """Return "ok" if the shared cache answers now, else "unavailable".

    Asks the primary of a `ResilientCache` directly (its breaker aside): the
    fallback serving the app does not make a down Redis healthy.
    """
    default = caches["default"]
    probe = default.primary if isinstance(default, ResilientCache) else default
    try:
        probe.has_key(HEALTH_KEY)
    except Exception as exc:  # noqa: BLE001 - a probe reports whatever the cache raised
        logger.warning("Health check: cache unavailable: %s: %s", type(exc).__name__, exc)
        return "unavailable"
    return "ok"


class _SharedClient(RedisCacheClient):
    """Django's Redis client, keeping one `redis.Redis` per connection pool.

    Django's builds a new `redis.Redis` for every cache operation, and its
    constructor fills a table of about two hundred response callbacks: a
    quarter of a token refresh's app CPU (six cache operations; bench/run.py
    section (e)). A `redis.Redis` is safe to share between threads (each
    command takes a connection from the pool), so one per pool serves them all.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients = {}
        self._lock = threading.Lock()

    def get_client(self, key=None, *, write=False):
        index = self._get_connection_pool_index(write)
        client = self._clients.get(index)
        if client is None:
            # Django makes a server's pool on first use without a lock: two
            # threads could each make one (and a client each). Made here, under
            # this lock, there is one pool and one client per server.
            with self._lock:
                client = self._clients.get(index)
                if client is None:
                    pool = self._get_connection_pool(write)
                    client = self._clients[index] = self._client(connection_pool=pool)
        return client


class RedisCache(DjangoRedisCache):
    """django.core.cache.backends.redis.RedisCache with `_SharedClient`."""

    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = _SharedClient
