"""Sign-outs the backend has not heard of yet: queued, retried until the token expires.

When `/auth/logout` fails (the backend is down, slow, answers 5xx or garbage,
or may have acted without an answer), the session still ends here
(accounts/views.py `LogoutView`) and the pair goes into `PendingRevocation`:

- **Sealed.** The backend needs the token itself to revoke it, so a keyed
  hash is not enough: the pair is encrypted with Fernet under a key derived
  from SECRET_KEY (HKDF, its own `info`); keys from SECRET_KEY_FALLBACKS
  still open older rows. `token_hash` (accounts/record.py) lets a token be
  queued once.
- **Retried with back-off**: 30 s after the failed sign-out, then doubling,
  never more than AUTH_REVOCATION_MAX_BACKOFF apart, until `expires_at` (the
  refresh token's own expiry); a row past it is deleted, as the backend
  refuses that token anyway. A 2xx or a 401 (the token is no longer valid
  there) is delivered; any `BackendError` is tried again later.
- **Claimed** before each attempt: `UPDATE … SET next_attempt_at = now + lease
  WHERE id = … AND next_attempt_at = <as read>`, so two workers never send
  the same row at once, and a worker that dies mid-call leaves the row due
  again when the lease ends.

Who retries: `manage.py revocations --due` (cron, every minute) or `--flush`
(everything, now); and every worker, after a response, at most once per
AUTH_REVOCATION_RETRY_INTERVAL seconds: if rows are due it sends them from a
daemon thread, so no response waits for the backend. Token values are never
logged, printed or rendered.
"""

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.fernet import InvalidToken
from django.conf import settings
from django.core.signals import request_finished
from django.db import DatabaseError, IntegrityError, connection, connections, transaction
from django.db.models import F
from django.dispatch import receiver
from django.utils import timezone

from .client import get_client
from .conf import conf
from .exceptions import BackendError, Throttled
from .models import PendingRevocation
from .record import TokenRecord, token_hash
from .tokens import Tokens
from .vault import Sealer

logger = logging.getLogger(__name__)

# The first retry comes this long after the failed sign-out; each later one waits twice as long.
FIRST_RETRY = 30
# A token whose expiry nobody recorded is kept for the reference API's refresh lifetime.
UNKNOWN_LIFETIME = timedelta(days=7)
# Rows one background run sends at most; the rest wait for the next run.
BACKGROUND_BATCH = 50
DELIVERED, FAILED, EXPIRED, UNREADABLE = "delivered", "failed", "expired", "unreadable"


# --- the sealed pair ----------------------------------------------------------


_sealer = Sealer(b"accounts.revocations.pending")
seal = _sealer.seal


def unseal(sealed: str) -> Tokens:
    """Return the pair a `seal()` made.

    :raises InvalidToken: not sealed under SECRET_KEY or one of its fallbacks.
    """
    data = _sealer.open(sealed)
    return Tokens(access=data.get("access"), refresh=data.get("refresh"))


# --- queueing -------------------------------------------------------------------


def queue(tokens: Tokens, *, record: TokenRecord | None, error: BackendError) -> bool:
    """Keep the revocation of a signed-in session's pair the backend did not receive.

    Return whether it is queued (or was already). Nothing is queued without the
    session's record: an anonymous request's cookies could be anything, and
    each one would be a row kept for days.
    """
    key_token = tokens.refresh or tokens.access
    if record is None or key_token is None:
        return False
    now = timezone.now()
    expiry = record.refresh_expires_at if tokens.refresh else record.access_expires_at
    expires_at = datetime.fromtimestamp(expiry, UTC) if expiry else now + UNKNOWN_LIFETIME
    if expires_at <= now:
        logger.info("Sign-out of backend user %s not queued: the token has expired", record.user_id)
        return False
    secrets = (settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", ()))
    hashes_ = [token_hash(key_token, secret=secret) for secret in secrets]
    try:
        if PendingRevocation.objects.filter(token_hash__in=hashes_).exists():
            return True
        with transaction.atomic():
            PendingRevocation.objects.create(
                token_hash=hashes_[0],
                backend_user_id=record.user_id[:128],
                sealed=seal(tokens),
                expires_at=expires_at,
                next_attempt_at=now + timedelta(seconds=backoff(1)),
                attempts=1,
                last_error=describe(error),
            )
    except IntegrityError:
        return True  # a concurrent sign-out of the same token queued it
    except DatabaseError as exc:
        logger.error("Sign-out of backend user %s could not be queued: %s", record.user_id, exc)
        return False
    logger.info("Sign-out of backend user %s queued for the backend", record.user_id)
    return True


REVOKED, QUEUED, NOT_REVOKED = "revoked", "queued", "not_revoked"


class Revoker:
    """The one revoke-or-queue of every sign-out: the sign-out button, a session ended
    from the sessions page, a sign-in refused after the backend issued its tokens.

    `/auth/logout` first; a pair the backend did not receive is queued (`queue`).
    Once the backend has failed, the following pairs of the same `Revoker` are
    queued without calling it again: a backend that hangs costs one timeout,
    not one per session.
    """

    def __init__(self) -> None:
        self.failure: BackendError | None = None

    def revoke(self, tokens: Tokens, *, record: TokenRecord | None) -> str:
        """Revoke `tokens`; return REVOKED, QUEUED, or NOT_REVOKED (nothing could keep it:
        no record to queue it under, the token expired, or the database failed)."""
        if self.failure is None:
            try:
                get_client().logout(tokens)
                return REVOKED
            except BackendError as exc:
                logger.warning("Could not revoke the tokens at the backend: %s", exc)
                self.failure = exc
        return QUEUED if queue(tokens, record=record, error=self.failure) else NOT_REVOKED


def backoff(attempts: int) -> float:
    """Return the seconds to wait after `attempts` failed attempts (30 s, doubling, capped)."""
    doubled = FIRST_RETRY * 2 ** min(max(attempts, 1) - 1, 30)
    return float(min(doubled, conf.revocation_max_backoff))


def describe(error: BackendError) -> str:
    """Return `last_error` for a failure: its class and message (method, path, status)."""
    return f"{type(error).__name__}: {error}"[:200]


# --- retrying -------------------------------------------------------------------


@dataclass
class Counts:
    """What a `retry()` run did with the rows it looked at."""

    delivered: int = 0
    failed: int = 0
    expired: int = 0
    unreadable: int = 0
    skipped: int = 0  # claimed by another worker, or left after the backend proved down

    def add(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)


def lease_seconds() -> float:
    """Return how long a claim holds a row: longer than any attempt can take."""
    return sum(conf.backend_timeout) + 30


def claim(row: PendingRevocation) -> bool:
    """Take `row` for one attempt; return False if another worker took it first."""
    leased_until = timezone.now() + timedelta(seconds=lease_seconds())
    taken = PendingRevocation.objects.filter(pk=row.pk, next_attempt_at=row.next_attempt_at).update(
        next_attempt_at=leased_until
    )
    return taken == 1


def attempt(row: PendingRevocation) -> str:
    """Send one claimed row to `/auth/logout`; return delivered, failed, expired or unreadable."""
    now = timezone.now()
    if row.expires_at <= now:
        PendingRevocation.objects.filter(pk=row.pk).delete()
        return EXPIRED
    try:
        tokens = unseal(row.sealed)
    except (InvalidToken, ValueError):
        # SECRET_KEY changed and the old one is not in SECRET_KEY_FALLBACKS.
        logger.error("Revocation %s cannot be decrypted with SECRET_KEY; dropped", row.pk)
        PendingRevocation.objects.filter(pk=row.pk).delete()
        return UNREADABLE
    try:
        get_client().logout(tokens)  # a 401 answers normally: nothing left to revoke
    except BackendError as exc:
        delay = backoff(row.attempts + 1)
        if isinstance(exc, Throttled):
            delay = max(delay, float(exc.retry_after))
        PendingRevocation.objects.filter(pk=row.pk).update(
            attempts=F("attempts") + 1,
            next_attempt_at=now + timedelta(seconds=delay),
            last_error=describe(exc),
        )
        logger.info("Revocation %s failed again (%s); next try in %ss", row.pk, exc, int(delay))
        raise
    PendingRevocation.objects.filter(pk=row.pk).delete()
    logger.info("Sign-out of backend user %s delivered to the backend", row.backend_user_id)
    return DELIVERED


def retry(*, due_only: bool, stop_when_down: bool, limit: int | None = None) -> Counts:
    """Delete expired rows, then claim and send the due (or all) rows, oldest due first.

    `stop_when_down` ends the run at the first failure, leaving the other rows
    for later: a backend that is down would only cost each of them a timeout.
    """
    counts = Counts()
    now = timezone.now()
    counts.expired, _ = PendingRevocation.objects.filter(expires_at__lte=now).delete()
    rows = PendingRevocation.objects.order_by("next_attempt_at", "pk")
    if due_only:
        rows = rows.filter(next_attempt_at__lte=now)
    rows = list(rows[:limit] if limit else rows)
    for index, row in enumerate(rows):
        if not claim(row):
            counts.skipped += 1
            continue
        try:
            counts.add(attempt(row))
        except BackendError:
            counts.failed += 1
            if stop_when_down:
                counts.skipped += len(rows) - index - 1
                break
    return counts


# --- in-process retries, after a response -----------------------------------------

_lock = threading.Lock()
_next_look = 0.0  # time.monotonic() of this process's next look at the queue
_running = False


@receiver(request_finished, dispatch_uid="accounts.revocations.retry_soon")
def retry_soon(sender, **kwargs) -> None:
    """After a response, at most once per AUTH_REVOCATION_RETRY_INTERVAL: send due rows.

    The response has gone out when `request_finished` fires. The look is one
    indexed query; only when rows are due does a daemon thread send them.
    Connected when this module is imported (accounts/views.py imports it).
    """
    global _next_look
    interval = conf.revocation_retry_interval
    if interval <= 0:
        return
    with _lock:
        now = time.monotonic()
        if _running or now < _next_look:
            return
        _next_look = now + interval
    try:
        due = _any_due()
    except DatabaseError as exc:
        logger.warning("Revocation queue not checked: %s", exc)
        return
    except Exception:
        logger.exception("Revocation queue not checked")
        return
    if due:
        _start_background()


def _any_due() -> bool:
    # request_finished has closed the request's connection unless it is
    # persistent (CONN_MAX_AGE); one opened only for this look is closed again.
    opened_here = connection.connection is None
    try:
        return PendingRevocation.objects.filter(next_attempt_at__lte=timezone.now()).exists()
    finally:
        if opened_here:
            connection.close()


def _start_background() -> None:
    global _running
    with _lock:
        if _running:
            return
        _running = True
    threading.Thread(target=_retry_in_background, name="revocations", daemon=True).start()


def _retry_in_background() -> None:
    global _running
    try:
        counts = retry(due_only=True, stop_when_down=True, limit=BACKGROUND_BATCH)
        logger.debug("Background revocation run: %s", counts)
    except Exception:
        logger.exception("Background revocation run failed")
    finally:
        connections.close_all()  # this thread's own connections
        with _lock:
            _running = False
