"""Single-flight token refresh on Django's cache API (SPEC §3 "Refresh", §6).

The famous failure of the Next.js setup: parallel requests holding the same
rotating refresh token each call /auth/refresh, the backend sees a spent token
presented again, takes it for theft and revokes the family: the user is
thrown out. Here every request holding one refresh token — in this thread,
another worker process or another app server sharing the cache — causes one
backend call, keyed by k = sha256(refresh token):

1. A stored result under `result:k` is decrypted with a key derived from the
   refresh token itself and handed out while its access token is valid. If
   that access token has expired but the result carries a newer refresh
   token, that one is refreshed instead (never the spent one).
2. Otherwise `cache.add("lock:k")` picks one caller. It submits the call to a
   small per-process thread pool and waits at most AUTH_REFRESH_WAIT. The
   call runs on with its own, longer AUTH_REFRESH_TIMEOUT and stores its
   result for AUTH_REFRESH_GRACE seconds even if the request that started it
   has already answered 503: a slow backend that recovers signs nobody out.
3. The others poll `result:k` with a growing back-off until the wait budget
   is spent (then `RefreshPending`, a 503) or the lock disappears without a
   result (its holder died, or the call failed transiently): then they
   compete for the lock again.
4. A 401/403 is stored as a short negative result, so every waiter signs out
   consistently instead of presenting the token again.

The lock lives AUTH_REFRESH_LOCK_TTL seconds and its holder renews it every
third of that while the backend call runs (up to AUTH_REFRESH_TIMEOUT): a
worker killed mid-refresh frees its token within seconds, not after the
longest possible call.
"""

import base64
import hashlib
import json
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.cache import cache
from django.db import close_old_connections
from django.views.decorators.debug import sensitive_variables

from .client import Tokens, get_client
from .conf import conf
from .cookies import BackendCookie
from .exceptions import BackendError, RefreshPending, RefreshRejected
from .models import UserProfile
from .tokens import access_token_expiry

logger = logging.getLogger(__name__)

CACHE_PREFIX = "accounts:refresh"
MAX_CHAIN = 3
# Margin under which a cached access token counts as expired already.
ACCESS_MARGIN = 1.0
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


@dataclass(frozen=True)
class RefreshOutcome:
    """The new cookies for the browser, and the profile read with them if it could be."""

    cookies: list[BackendCookie]
    profile: UserProfile | None = None


def token_key(refresh_token: str) -> str:
    """Return the cache id of a refresh token (its SHA-256, never the token)."""
    return hashlib.sha256(refresh_token.encode("utf-8", "surrogatepass")).hexdigest()


@sensitive_variables()
def _fernet(refresh_token: str) -> Fernet:
    # Only a holder of the refresh token (and of SECRET_KEY) can read what is
    # cached for it: the cache never holds a readable token.
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=hashlib.sha256(settings.SECRET_KEY.encode()).digest(),
        info=b"accounts.refresh.result",
    ).derive(refresh_token.encode("utf-8", "surrogatepass"))
    return Fernet(base64.urlsafe_b64encode(key))


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="token-refresh")
        return _pool


# --- the stored result ---------------------------------------------------------


def _serialize(outcome: RefreshOutcome | None) -> bytes:
    if outcome is None:
        return json.dumps({"rejected": True}).encode()
    now = time.time()
    cookies = [
        {
            "name": c.name,
            "value": c.value,
            "expires_at": c.expires_at.timestamp() if c.expires_at else None,
            "path": c.path,
            "httponly": c.httponly,
            "deletes": c.deletes,
        }
        for c in outcome.cookies
    ]
    profile = outcome.profile.__dict__ if outcome.profile else None
    return json.dumps({"stored_at": now, "cookies": cookies, "profile": profile}).encode()


def _deserialize(raw: bytes) -> RefreshOutcome | None:
    data = json.loads(raw)
    if data.get("rejected"):
        return None
    now = time.time()
    cookies = []
    for item in data["cookies"]:
        if item["deletes"]:
            max_age = 0
        elif item["expires_at"] is None:
            max_age = None
        else:
            max_age = max(1, int(item["expires_at"] - now))
        cookies.append(
            BackendCookie(
                name=item["name"],
                value=item["value"],
                max_age=max_age,
                path=item["path"],
                httponly=item["httponly"],
            )
        )
    profile = data.get("profile")
    if profile:
        profile = UserProfile(**{**profile, "roles": tuple(profile["roles"])})
    return RefreshOutcome(cookies=cookies, profile=profile)


@sensitive_variables()
def _store(refresh_token: str, outcome: RefreshOutcome | None) -> None:
    sealed = _fernet(refresh_token).encrypt(_serialize(outcome))
    cache.set(f"{CACHE_PREFIX}:result:{token_key(refresh_token)}", sealed, conf.refresh_grace)


class _Rejected:
    """Marker: the cached answer for this token is a refusal."""


@sensitive_variables()
def _load(refresh_token: str) -> RefreshOutcome | type[_Rejected] | None:
    sealed = cache.get(f"{CACHE_PREFIX}:result:{token_key(refresh_token)}")
    if sealed is None:
        return None
    try:
        outcome = _deserialize(_fernet(refresh_token).decrypt(sealed))
    except (InvalidToken, ValueError, KeyError, TypeError):
        logger.warning("Ignored an unreadable cached refresh result")
        return None
    return _Rejected if outcome is None else outcome


def _cookie(outcome: RefreshOutcome, name: str) -> BackendCookie | None:
    return next((c for c in outcome.cookies if c.name == name and not c.deletes), None)


def _access_valid(outcome: RefreshOutcome) -> bool:
    access = _cookie(outcome, conf.access_cookie)
    if access is None:
        return False
    expiry = access_token_expiry(access.value) or access.expires_at
    if expiry is None:
        return True
    return expiry.timestamp() - ACCESS_MARGIN > datetime.now(UTC).timestamp()


def _merge(first: list[BackendCookie], later: list[BackendCookie]) -> list[BackendCookie]:
    """Later cookies win by name (a chained refresh may renew only the access token)."""
    merged = {c.name: c for c in first}
    merged.update({c.name: c for c in later})
    return list(merged.values())


# --- the call --------------------------------------------------------------------


def _keep_lock(lock_key: str, owner: str, done: threading.Event) -> None:
    """Renew the lock while its call runs; stop if someone else holds it."""
    try:
        while not done.wait(conf.refresh_lock_ttl / 3):
            if cache.get(lock_key) != owner:
                return
            cache.touch(lock_key, conf.refresh_lock_ttl)
    finally:
        close_old_connections()


@sensitive_variables()
def _call_backend(refresh_token: str, lock_key: str, owner: str) -> RefreshOutcome:
    """Run in the pool: refresh, read the profile, store the result, release the lock."""
    done = threading.Event()
    threading.Thread(
        target=_keep_lock, args=(lock_key, owner, done), name="token-refresh-lock", daemon=True
    ).start()
    try:
        client = get_client()
        try:
            cookies = client.refresh(refresh_token)
        except RefreshRejected:
            _store(refresh_token, None)
            raise
        # Store the new pair before anything else: the backend has spent the
        # old token, and if this process died now the pair would be lost and
        # the next request would present a spent token (a reuse: sign-out).
        _store(refresh_token, RefreshOutcome(cookies=cookies))
        outcome = RefreshOutcome(cookies=cookies, profile=_profile_with(cookies))
        if outcome.profile is not None:
            _store(refresh_token, outcome)
        return outcome
    finally:
        done.set()
        if cache.get(lock_key) == owner:
            cache.delete(lock_key)
        close_old_connections()


@sensitive_variables()
def _profile_with(cookies: list[BackendCookie]) -> UserProfile | None:
    try:
        return get_client().me(Tokens().updated_by(cookies))
    except BackendError as exc:
        # Each request re-reads the profile itself then; the tokens are fine.
        logger.info("Profile after refresh not read: %s", exc)
        return None


@sensitive_variables()
def refresh_tokens(refresh_token: str, *, _depth: int = 0) -> RefreshOutcome:
    """Return new cookies for `refresh_token`, with one backend call per token.

    :raises RefreshRejected: the backend refused the token (sign out).
    :raises RefreshPending: the wait budget ran out (503; the call goes on).
    :raises BackendUnavailable: the backend failed transiently (keep the session).
    """
    deadline = time.monotonic() + conf.refresh_wait
    key = token_key(refresh_token)
    lock_key = f"{CACHE_PREFIX}:lock:{key}"
    delay = 0.01
    while True:
        cached = _load(refresh_token)
        if cached is _Rejected:
            raise RefreshRejected("refresh token refused (shared result)")
        if cached is not None:
            outcome = _reuse(refresh_token, cached, _depth)
            if outcome is not None:
                return outcome
        owner = uuid.uuid4().hex
        if cache.add(lock_key, owner, conf.refresh_lock_ttl) and cache.get(lock_key) == owner:
            return _lead(refresh_token, lock_key, owner, deadline)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RefreshPending("another request is refreshing these tokens; try again")
        time.sleep(min(delay, remaining))
        delay = min(delay * 1.5, 0.25)


@sensitive_variables()
def _reuse(refresh_token: str, cached: RefreshOutcome, depth: int) -> RefreshOutcome | None:
    """Return what a stored result gives this caller, or None to refresh anew."""
    if _access_valid(cached):
        logger.debug("Refresh served from the shared result")
        return cached
    newer = _cookie(cached, conf.refresh_cookie)
    if newer is not None and newer.value != refresh_token and depth < MAX_CHAIN:
        # The pair issued for this (now spent) token has expired already:
        # renew its successor rather than present a spent token again.
        later = refresh_tokens(newer.value, _depth=depth + 1)
        return RefreshOutcome(cookies=_merge(cached.cookies, later.cookies), profile=later.profile)
    # A backend that does not rotate: never hand out the expired pair again.
    return None


@sensitive_variables()
def _lead(refresh_token: str, lock_key: str, owner: str, deadline: float) -> RefreshOutcome:
    # Between our look-up and the lock another holder may have finished.
    cached = _load(refresh_token)
    if cached is _Rejected:
        cache.delete(lock_key)
        raise RefreshRejected("refresh token refused (shared result)")
    if isinstance(cached, RefreshOutcome) and _access_valid(cached):
        cache.delete(lock_key)
        return cached
    logger.debug("Refreshing at the backend (single flight leader)")
    future = _executor().submit(_call_backend, refresh_token, lock_key, owner)
    try:
        return future.result(timeout=max(0.0, deadline - time.monotonic()))
    except FutureTimeout as exc:
        raise RefreshPending("the refresh is taking long; try again") from exc
