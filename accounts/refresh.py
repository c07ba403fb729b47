"""Single-flight token refresh on Django's cache API: each refresh token is presented once.

A backend that rotates refresh tokens takes a spent token presented again for
theft and revokes the whole sign-in. So, for every refresh token, keyed by its
keyed hash `h` (`accounts.record.token_hash`):

1. `cache.add("accounts:refresh:h", pending)` is the claim. The one caller that
   wins it is the only one ever to send that token; the entry is kept for the
   rest of the token's own life, so the claim can never lapse and be won again.
2. The winner hands the call to a per-process pool and marks it alive
   (`…:h:alive`, AUTH_REFRESH_LOCK_TTL seconds) from the moment it is
   submitted; one keeper thread renews every alive mark of the process while
   calls are queued or running. The call waits up to AUTH_REFRESH_TIMEOUT,
   far longer than any request waits (AUTH_REFRESH_WAIT): nobody has to be
   waiting for its answer to be kept.
3. The pool thread then replaces the entry with the outcome, once: `ok` (the
   new pair, encrypted with a key derived from the spent token itself, and the
   keyed hashes of the new pair), `refused` (401/403), or `unknown` (the call
   may have reached the backend but no answer came back). A call that
   certainly never reached the backend deletes the entry, so it may be tried
   again.
4. Everyone else reads the entry: pending and alive → wait within the
   request's budget (then `RefreshPending`, 503); pending and not alive → the
   owner died mid-call: `unknown`. An `ok` outcome is handed to the session
   it was made for (its `binding`) for the token's whole life, and to anyone
   holding the token within AUTH_REFRESH_GRACE seconds.

A backend that does not rotate gives back the same refresh token; its next
refresh is a new round, keyed `h.1`, `h.2`…, so an expired pair is never
handed out again and the same token may be presented once per round.
See docs/architecture.md for the whole request path.
"""

import contextvars
import hashlib
import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.cache import cache
from django.db import close_old_connections

from . import shape, signals
from .client import RefreshRefused, get_client
from .conf import conf
from .cookies import BackendCookie
from .exceptions import BackendError, BackendUnavailable, RefreshPending
from .models import UserProfile
from .record import derived_fernet, token_hash
from .tokens import Tokens

logger = logging.getLogger(__name__)

CACHE_PREFIX = "accounts:refresh"
PENDING, OK, REFUSED, UNKNOWN, FOREIGN = "pending", "ok", "refused", "unknown", "foreign"
# Seconds a call may wait for a pool thread before the log says the pool is too small.
POOL_WAIT_WARNING = 1.0
# Claims lost to an entry that then cannot be read, before the cache counts as unavailable.
MAX_LOST_CLAIMS = 3


@dataclass(frozen=True, repr=False)
class Outcome:
    """What became of one refresh token: `state`, and for `ok` the new pair.

    `own` is true when the caller's own call made it, just now (taken from the
    call's future, not read from the cache). `replaced_access` is set on an
    outcome read from the cache, where a late tab's access token is checked
    against it (accounts/checking.py).
    """

    state: str
    cookies: tuple[BackendCookie, ...] = ()
    profile: UserProfile | None = None
    replaced_access: str | None = None
    own: bool = False

    def __repr__(self) -> str:
        return f"Outcome(state={self.state!r}, cookies={len(self.cookies)})"

    @property
    def tokens(self) -> Tokens:
        return Tokens().updated_by(list(self.cookies))


def following(token: str, round_: int, newer: str | None) -> tuple[str, int]:
    """Return (token, round) of the refresh after one that answered with `newer`.

    A backend that rotates gives a new token (round 0 again); one that does
    not gives the same token back, or none, and its next refresh is a new round.
    """
    if newer is None or newer == token:
        return token, round_ + 1
    return newer, 0


def entry_key(refresh_hash: str, round_: int = 0) -> str:
    """Return the cache key of the claim/outcome of one refresh round of a token."""
    suffix = f".{round_}" if round_ else ""
    return f"{CACHE_PREFIX}:{refresh_hash}{suffix}"


def _fernet(refresh_token: str) -> Fernet:
    # Only a holder of the spent token (and of SECRET_KEY) can read the pair
    # issued for it: the cache never holds a readable token.
    return derived_fernet(
        refresh_token.encode("utf-8", "surrogatepass"),
        info=b"accounts.refresh.outcome",
        salt=hashlib.sha256(settings.SECRET_KEY.encode()).digest(),
    )


def _seal(fernet: Fernet, cookies: list[BackendCookie], profile: UserProfile | None) -> bytes:
    payload = {
        "cookies": [
            {
                "name": c.name,
                "value": c.value,
                "expires_at": c.expires_at.timestamp() if c.expires_at else None,
                "deletes": c.deletes,
                "path": c.path,
            }
            for c in cookies
        ],
        "profile": profile.__dict__ if profile else None,
    }
    return fernet.encrypt(json.dumps(payload).encode())


def _unseal(
    refresh_token: str, sealed: bytes
) -> tuple[tuple[BackendCookie, ...], UserProfile | None]:
    payload = json.loads(_fernet(refresh_token).decrypt(sealed))
    now = time.time()
    cookies = []
    for item in payload["cookies"]:
        if item["deletes"]:
            max_age = 0
        elif item["expires_at"] is None:
            max_age = None
        else:
            max_age = max(1, int(item["expires_at"] - now))
        cookies.append(
            BackendCookie(
                name=item["name"], value=item["value"], max_age=max_age, path=item["path"]
            )
        )
    profile = payload.get("profile")
    if profile:
        profile = UserProfile(**{**profile, "roles": tuple(profile["roles"])})
    return tuple(cookies), profile


# --- the alive marks and their keeper ------------------------------------------


class _Keeper:
    """One thread per process that renews the alive mark of every call it holds."""

    def __init__(self):
        self._held: dict[str, str] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, alive_key: str) -> None:
        cache.set(alive_key, "1", conf.refresh_lock_ttl)
        with self._lock:
            self._held[alive_key] = "1"
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="token-refresh-keeper", daemon=True
                )
                self._thread.start()

    def release(self, alive_key: str) -> None:
        with self._lock:
            self._held.pop(alive_key, None)
        cache.delete(alive_key)

    def _run(self) -> None:
        try:
            while True:
                time.sleep(conf.refresh_lock_ttl / 4)
                with self._lock:
                    keys = list(self._held)
                if keys:
                    # Only this process ever writes these marks (it won the
                    # claims), so a renewal can never extend someone else's; a
                    # mark the cache lost comes back with it. One round trip
                    # for all: on a starved machine, one set after another
                    # could outlast the marks' own life.
                    cache.set_many(dict.fromkeys(keys, "1"), conf.refresh_lock_ttl)
                close_old_connections()
        except Exception:  # the next hold() starts a new keeper
            logger.exception("The refresh keeper stopped")


_keeper = _Keeper()
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=conf.refresh_pool_size, thread_name_prefix="token-refresh"
            )
        return _pool


# --- the call ------------------------------------------------------------------


def _call_backend(refresh_token: str, key: str, entry: dict, keep_for: int) -> Outcome | None:
    """Run in the pool: spend the token once, write its outcome once, and return it.

    The owner of the claim takes the returned outcome from the future, without
    reading it back from the cache; None means the call certainly never reached
    the backend and the claim is released.
    """
    alive = f"{key}:alive"
    presented = f"{key}:presented"
    queued = time.time() - entry["started_at"]
    if queued > POOL_WAIT_WARNING:
        logger.warning(
            "A refresh waited %.1f s for a pool thread; raise AUTH_REFRESH_POOL_SIZE", queued
        )
    try:
        if not _first_presentation(presented, keep_for):
            # The claim was won twice (an entry the cache lost, a failover):
            # the token may be spent already, so it is not sent again.
            logger.error("A refresh token was about to be presented twice; not sent")
            signals.reuse_suspect()
            return _finished(key, entry, UNKNOWN, keep_for)
        try:
            cookies = get_client().refresh(refresh_token)
        except RefreshRefused:
            logger.info("The backend refused a refresh token")
            signals.refresh_call("refused")
            return _finished(key, entry, REFUSED, keep_for)
        except BackendError as exc:
            shape.report(exc)
            if exc.maybe_processed:
                logger.warning("Refresh outcome unknown (%s); its session will end", exc)
                signals.refresh_call("unknown")
                return _finished(key, entry, UNKNOWN, keep_for)
            logger.warning("Refresh never reached the backend (%s); may be retried", exc)
            signals.refresh_call("transient")
            cache.delete_many([key, presented])
            return None
        except Exception:
            logger.exception("Refresh call failed unexpectedly; its session will end")
            signals.refresh_call("unknown")
            return _finished(key, entry, UNKNOWN, keep_for)
        signals.refresh_call("ok")
        new = Tokens().updated_by(cookies)
        done = {
            **entry,
            "state": OK,
            "finished_at": time.time(),
            "next_access": token_hash(new.access),  # refresh() answers none without one
            "next_refresh": token_hash(new.refresh or refresh_token),
        }
        # The new pair is stored before anything else can fail: the backend
        # has spent the old token, and a lost pair would mean a reuse later.
        fernet = _fernet(refresh_token)
        cache.set(key, {**done, "sealed": _seal(fernet, cookies, None)}, keep_for)
        profile = _profile_with(new)
        if profile is not None:
            cache.set(key, {**done, "sealed": _seal(fernet, cookies, profile)}, keep_for)
        return Outcome(state=OK, cookies=tuple(cookies), profile=profile, own=True)
    finally:
        _keeper.release(alive)
        close_old_connections()


def _first_presentation(presented_key: str, keep_for: int) -> bool:
    """Mark a token as presented; return False if it was marked already (reuse suspect).

    A cache that cannot answer cannot tell: the claim already guards the token.
    """
    try:
        return bool(cache.add(presented_key, 1, keep_for))
    except Exception:  # noqa: BLE001 - any cache failure
        logger.warning("The presented mark could not be written; the claim alone guards")
        return True


def _finished(key: str, entry: dict, state: str, keep_for: int) -> Outcome:
    cache.set(key, {**entry, "state": state, "finished_at": time.time()}, keep_for)
    return Outcome(state=state)


def _profile_with(tokens: Tokens) -> UserProfile | None:
    if conf.roles_from == "token":
        return None  # each request reads the roles from the new access token itself
    try:
        return get_client().me(tokens)
    except BackendError as exc:
        shape.report(exc)
        # Each collecting request reads the profile itself then.
        logger.info("Profile after refresh not read: %s", exc)
        return None


@dataclass
class Claim:
    """A refresh this process started: wait on `future` rather than polling."""

    key: str
    future: Future


def start(
    refresh_token: str,
    *,
    binding: str,
    round_: int,
    keep_for: int,
    replaced_access: str | None = None,
) -> Claim | None:
    """Claim and submit the refresh of one round of `refresh_token`; None if already claimed.

    `replaced_access` is the keyed hash of the access token of the pair being
    replaced: a late tab must present that one (or none) to collect the result.
    """
    key = entry_key(token_hash(refresh_token), round_)
    entry = {
        "state": PENDING,
        "binding": binding,
        "started_at": time.time(),
        "round": round_,
        "replaced_access": replaced_access,
    }
    if not cache.add(key, entry, keep_for):
        return None
    _keeper.hold(f"{key}:alive")
    logger.debug("Refreshing at the backend (claimed %s)", key[-12:])
    # In a copy of this request's context: the call sends the request's id
    # (accounts/requestid.py) and its log lines carry it.
    future = _executor().submit(
        contextvars.copy_context().run, _call_backend, refresh_token, key, entry, keep_for
    )
    return Claim(key=key, future=future)


def outcome(
    refresh_token: str,
    *,
    binding: str,
    round_: int = 0,
    keep_for: int,
    deadline: float | None,
    replaced_access: str | None = None,
    claims: dict[str, Claim] | None = None,
) -> Outcome:
    """Return the outcome of one refresh round, claiming and starting it if nobody has.

    With `deadline` None, never wait: a refresh in flight raises RefreshPending
    at once (the caller goes on with the token it has). `claims`, one
    request's record of the calls it started, lets the same request collect
    its own call later (at the end of the request) from the call itself,
    without a read of the cache.

    :raises RefreshPending: the call is still running when the budget is spent.
    """
    key = entry_key(token_hash(refresh_token), round_)
    claim = claims.get(key) if claims is not None else None
    tried = claim is not None  # one attempt per request
    lost = 0
    delay = 0.01
    began = time.monotonic()
    while True:
        if claim is not None:
            # Our own call: wait on it and take its outcome as it is.
            remaining = (deadline - time.monotonic()) if deadline is not None else 0
            try:
                found = claim.future.result(timeout=max(remaining, 0))
            except FutureTimeout:
                _waited(began, deadline)
                raise RefreshPending("the refresh is still running; try again") from None
            except Exception:
                logger.exception("A refresh call failed; reading what it left in the cache")
                claim = None
                continue
            if found is None:
                # It failed before reaching the backend and released the claim:
                # the next request may try again, this one does not.
                raise BackendUnavailable("the refresh call did not reach the backend")
            _waited(began, deadline)
            return found
        entry = cache.get(key)
        if entry is None:
            if tried:
                raise BackendUnavailable("the refresh call did not reach the backend")
            claim = start(
                refresh_token,
                binding=binding,
                round_=round_,
                keep_for=keep_for,
                replaced_access=replaced_access,
            )
            if claim is not None:
                tried = True
                if claims is not None:
                    claims[key] = claim
                continue
            # Someone claimed it between our read and our add; a cache whose
            # add keeps failing while get finds nothing (a database cache
            # timing out on its lock) is unavailable: never spin on it.
            lost += 1
            if lost >= MAX_LOST_CLAIMS:
                raise BackendUnavailable("the cache neither holds nor takes the refresh claim")
            continue
        state = entry.get("state")
        if state in (OK, REFUSED, UNKNOWN):
            # Another request's call answered this one: coalesced.
            waited = time.monotonic() - began
            signals.refresh_served("waited" if delay > 0.01 else "shared", waited)
            if state == OK:
                return _collect(refresh_token, entry, binding)
            return Outcome(state=state)
        if _owner_died(key, entry):
            logger.warning("A refresh's owner died with the call in flight; outcome unknown")
            return Outcome(state=UNKNOWN)
        remaining = patience(entry, deadline)
        if remaining <= 0:
            _waited(began, deadline)
            raise RefreshPending("the refresh is still running; try again")
        time.sleep(min(delay, remaining))
        delay = min(delay * 1.5, 0.25)


def patience(entry: dict, deadline: float | None) -> float:
    """Return how long to wait for another request's refresh still in flight.

    The request's own budget (`deadline`), and never past AUTH_REFRESH_WAIT
    from the refresh's start: once a refresh has outlasted that, the backend
    is slow, and every later request of the session answers at once (503 for
    what needs the token) instead of holding a thread for a budget of its own.
    """
    if deadline is None:
        return 0.0
    started = entry.get("started_at")
    left = deadline - time.monotonic()
    if isinstance(started, int | float):
        left = min(left, started + conf.refresh_wait - time.time())
    return left


def _waited(began: float, deadline: float | None) -> None:
    # Only a request that may wait counts: a background look never waits.
    if deadline is not None:
        signals.refresh_wait(time.monotonic() - began)


def _owner_died(key: str, entry: dict) -> bool:
    """Return whether a pending claim lost its owner (no alive mark, and not a fresh claim).

    The mark follows the claim by a moment, hence the age check.
    """
    started = entry.get("started_at", 0)
    return (
        time.time() - started > conf.refresh_lock_ttl
        and cache.get(f"{key}:alive") is None
        and cache.get(key) == entry
    )


def _collect(refresh_token: str, entry: dict, binding: str) -> Outcome:
    mine = entry.get("binding") == binding
    if not mine and time.time() > entry.get("finished_at", 0) + conf.refresh_grace:
        # Another session holds this spent token: it gets nothing.
        logger.warning("A spent refresh token was presented by another session")
        return Outcome(state=FOREIGN)
    try:
        cookies, profile = _unseal(refresh_token, entry["sealed"])
    except (InvalidToken, ValueError, KeyError, TypeError):
        logger.warning("An unreadable refresh outcome; its session will end")
        return Outcome(state=UNKNOWN)
    return Outcome(
        state=OK, cookies=cookies, profile=profile, replaced_access=entry.get("replaced_access")
    )


def peek(refresh_token: str, *, binding: str, round_: int = 0) -> Outcome | None:
    """Return a finished outcome of one refresh round, or None; never claims, never waits."""
    entry = cache.get(entry_key(token_hash(refresh_token), round_))
    if entry is None or entry.get("state") == PENDING:
        return None
    if entry["state"] == OK:
        return _collect(refresh_token, entry, binding)
    return Outcome(state=entry["state"])


def successor(refresh_hash: str, round_: int, binding: str) -> tuple[str | None, str, int] | None:
    """Return (access hash, refresh hash, round) of the pair issued for this round, if any.

    Reads only the entry's keyed hashes (no token needed): this is how a
    session whose record fell behind recognises its own newer cookies.
    """
    entry = cache.get(entry_key(refresh_hash, round_))
    if not entry or entry.get("state") != OK or entry.get("binding") != binding:
        return None
    next_refresh, next_round = following(refresh_hash, round_, entry["next_refresh"])
    return entry.get("next_access"), next_refresh, next_round
