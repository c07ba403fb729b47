"""Sign-in throttling, counted in the database before the password is checked.

Three counters guard every attempt, rows of `accounts.models.LoginCounter`
keyed by an HMAC (under SECRET_KEY) of the email (every spelling the backend
may take for it as one, `counted_email`) and the client address, so the
table names neither:

- the (email, client address) pair: AUTH_LOGIN_MAX_FAILURES failures lock
  out that pair, and nobody else;
- the client address: AUTH_LOGIN_MAX_FAILURES_PER_IP failures, whatever the
  emails, lock out that address (one place guessing many accounts);
- the email's attempts in flight, from all clients together, once the email
  has failed AUTH_LOGIN_MAX_FAILURES times in a window from anywhere (it is
  being guessed): at most AUTH_LOGIN_EMAIL_CONCURRENCY at once. One over the
  cap waits up to SLOT_WAIT seconds for a slot, then is refused with
  Retry-After 1. Many places guessing one email get a few guesses at a time,
  the owner is never locked out, and an email nobody guesses is never capped
  (a team signing in to one shared account at once).

There is no lockout per email: failures from anywhere would lock its owner
out everywhere, renewable at will (behind a proxy nobody told the app about,
every user at once). A correct password from a client with no failures
signs in as soon as it has a slot.

Failures count for AUTH_LOGIN_THROTTLE_WINDOW seconds from the first one of a
window (the cool-off); a refused client is told exactly when that ends, and
trying sooner does not move it. IPv6 addresses count by their /64 network,
which one subscriber usually holds whole.

Each step is one atomic upsert (INSERT … ON CONFLICT … RETURNING, PostgreSQL
and SQLite ≥ 3.35), and an attempt is counted *before* its password goes to
the backend: it is a failure until it succeeds. Thirty guesses sent at once
from one client read the counts 1 to 30; those past the limit never reach
the backend, so at most the limit of them are ever checked. Those past it
only because earlier ones are still in flight wait for them to settle (see
SignInAttempt), then go on or are refused. What
turns out not to be a failure is given back when the attempt is settled: a
success deletes its pair's counter and takes its count back from the
address; an attempt refused here, a malformed form, or a backend that failed
or throttled takes back both.

Learned from django-axes (jazzband/django-axes): lockout by the combination
of username and IP address (its AXES_LOCKOUT_PARAMETERS = [["username",
"ip_address"]]) next to lockout by address alone; a cool-off after which
failures are forgotten (AXES_COOLOFF_TIME); reset on success
(AXES_RESET_ON_SUCCESS); 429 with Retry-After (AXES_HTTP_RESPONSE_CODE,
AXES_ENABLE_RETRY_AFTER_HEADER). Done differently: axes checks before the
backend and counts when the backend has said no (its `user_login_failed`
handlers), so attempts sent together all pass the check; and its cool-off
runs from the latest failure, restarted by attempts during the lockout.
"""

import contextlib
import ipaddress
import logging
import math
import random
import time
import unicodedata
from dataclasses import dataclass

from django.db import DatabaseError, connection
from django.db.models import F
from django.http import HttpRequest
from django.utils.crypto import salted_hmac

from .conf import conf
from .forwarded import client_ip
from .models import LoginCounter

logger = logging.getLogger(__name__)

SLOT_WAIT = 1.0  # seconds an attempt over the email's concurrency cap waits for a slot
SETTLE_WAIT = 3.0  # seconds an attempt waits for its client's attempts in flight to settle
SLOT_POLL = 0.05  # seconds between looks at a full email's slots
SLOT_LIFETIME = 60.0  # a slot a killed worker never gave back is free again after this
PURGE_CHANCE = 0.001  # one attempt in about a thousand deletes the expired counters


# --- The client address (accounts/forwarded.py) --------------------------------------


def _address(ip: str) -> str:
    """The unit an address counts in: itself, or its /64 network for IPv6."""
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if parsed.version == 4:
        return str(parsed)
    if parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(ipaddress.ip_network(f"{parsed}/64", strict=False))


def counted_email(email: str) -> str:
    """Return the form of `email` its counters are keyed by: one for every spelling of it.

    The backend may match emails more loosely than `lower()`: PostgreSQL's
    case-insensitive match (`UPPER(a) = UPPER(b)`) takes a dotless `ı` for
    `i`, so `admın@` signs in as `admin@` and must not get counters of its
    own. NFKC folds compatibility forms (fullwidth letters), `casefold` case
    beyond ASCII, and the upper-then-lower round trip what only uppercase
    joins. Folding more than the backend does only counts more together.
    """
    return unicodedata.normalize("NFKC", email.strip()).casefold().upper().lower()


def _digest(*parts: str) -> str:
    value = "\n".join(parts)
    return salted_hmac("accounts.throttle", value, algorithm="sha256").hexdigest()


# --- Counters -----------------------------------------------------------------------


@dataclass(frozen=True)
class Count:
    """A counter as one step left it; `expires_at` also names its window."""

    key: str
    count: int
    expires_at: float

    def seconds_left(self, now: float) -> int:
        return max(1, math.ceil(self.expires_at - now))


def _bump(lifetimes: dict[str, float]) -> dict[str, Count]:
    """Add one to each counter (a fresh window if it expired) in one atomic upsert.

    `lifetimes` maps each key to the seconds a window it opens lasts.
    """
    now = time.time()
    quote = connection.ops.quote_name
    table = quote(LoginCounter._meta.db_table)
    key, count, expires = (quote(name) for name in ("key", "count", "expires_at"))
    rows = ", ".join(["(%s, 1, %s)"] * len(lifetimes))
    # Only names quoted by the database's own rules go into the text; values are parameters.
    sql = (
        f"INSERT INTO {table} ({key}, {count}, {expires}) VALUES {rows} "  # noqa: S608
        f"ON CONFLICT ({key}) DO UPDATE SET "
        f"{count} = CASE WHEN {table}.{expires} <= %s THEN 1 ELSE {table}.{count} + 1 END, "
        f"{expires} = CASE WHEN {table}.{expires} <= %s "
        f"THEN excluded.{expires} ELSE {table}.{expires} END "
        f"RETURNING {key}, {count}, {expires}"
    )
    params = [value for k, seconds in lifetimes.items() for value in (k, now + seconds)]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, now, now])
        return {row[0]: Count(row[0], row[1], row[2]) for row in cursor.fetchall()}


def _unbump(counts: list[Count]) -> None:
    """Take one back from each counter, unless its window has ended since.

    One statement per counter: each locks one row, so it can never deadlock
    with `_bump`, which locks several in the same order every time.
    """
    for c in counts:
        LoginCounter.objects.filter(key=c.key, expires_at=c.expires_at, count__gt=0).update(
            count=F("count") - 1
        )


def _looks_free(key: str, cap: int) -> bool:
    row = LoginCounter.objects.filter(key=key).values_list("count", "expires_at").first()
    return row is None or row[0] < cap or row[1] <= time.time()


def purge_expired() -> int:
    """Delete the counters whose window has ended; return how many."""
    deleted, _ = LoginCounter.objects.filter(expires_at__lte=time.time()).delete()
    return deleted


# --- One attempt --------------------------------------------------------------------


class SignInAttempt:
    """One sign-in attempt as the throttle sees it: counted, then settled.

        attempt = SignInAttempt(request, email=email)
        wait = attempt.start()   # None: counted, holding a slot; else seconds to wait
        if wait is None:
            try:
                ...               # check the password; attempt.succeeded() or .failed()
            finally:
                attempt.finish()  # give back what was no failure, free the slot

    The pair's and the address's counters hold failures *and* attempts in
    flight; a `busy-…` companion holds the attempts in flight alone. So a
    counter over its limit says which it is: failures alone over the limit
    are a lockout (429 until the window ends); otherwise attempts of the same
    client are still being checked, and this one waits up to SETTLE_WAIT for
    them to settle. Fifteen people signing in at once from one office behind
    one address queue for a moment instead of being refused; thirty guesses at
    once still let only the limit through.

    `start` lets DatabaseError through with nothing left counted that it
    could take back; `finish` never raises (what it could not write back ages
    out: counts with their window, the slot after SLOT_LIFETIME).
    """

    def __init__(self, request: HttpRequest, *, email: str):
        email = counted_email(email)
        address = _address(client_ip(request))
        self.pair_key = f"pair:{_digest(email, address)}"
        self.client_key = f"client:{_digest(address)}"
        self.email_key = f"email:{_digest(email)}"
        self.slot_key = f"inflight:{_digest(email)}"
        self._held: list[Count] = []  # pair, pair busy, client, client busy, [slot]
        self._outcome: str | None = None

    def start(self) -> int | None:
        """Count the attempt and take a slot; return None, or seconds until it may be tried.

        :raises DatabaseError: the counters cannot be reached.
        """
        if random.random() < PURGE_CHANCE:  # noqa: S311 - not for security
            purge_expired()
        deadline = time.monotonic() + SETTLE_WAIT
        while True:
            held, wait = self._count()
            if wait is None:
                break
            if wait > 0:
                logger.info("Sign-in refused by the throttle: too many failures")
                return wait
            if time.monotonic() + SLOT_POLL > deadline:
                logger.info("Sign-in refused by the throttle: this client's attempts in flight")
                return 1
            time.sleep(SLOT_POLL)
        if not self._email_under_pressure():
            self._held = held
            return None
        try:
            slot = self._slot(_bump({self.slot_key: SLOT_LIFETIME})[self.slot_key])
        except DatabaseError:
            with contextlib.suppress(DatabaseError):
                _unbump(held)
            raise
        if slot is None:
            _unbump(held)
            logger.info("Sign-in refused by the throttle: the email's attempts are all in flight")
            return 1
        self._held = [*held, slot]
        return None

    def _count(self) -> tuple[list[Count], int | None]:
        """Count this attempt in; return (the counts held, None) or ([], seconds to wait).

        Seconds 0 means "over the limit only by attempts still in flight".
        """
        window = conf.login_throttle_window
        pair_busy, client_busy = f"busy-{self.pair_key}", f"busy-{self.client_key}"
        counts = _bump(
            {
                self.pair_key: window,
                pair_busy: SLOT_LIFETIME,
                self.client_key: window,
                client_busy: SLOT_LIFETIME,
            }
        )
        held = [counts[key] for key in (self.pair_key, pair_busy, self.client_key, client_busy)]
        limits = (
            (counts[self.pair_key], counts[pair_busy], conf.login_max_failures),
            (counts[self.client_key], counts[client_busy], conf.login_max_failures_per_ip),
        )
        over = [(total, busy, limit) for total, busy, limit in limits if total.count > limit]
        if not over:
            return held, None
        _unbump(held)
        now = time.time()
        locked = [total for total, busy, limit in over if total.count - busy.count >= limit]
        return [], max((total.seconds_left(now) for total in locked), default=0)

    def _email_under_pressure(self) -> bool:
        """Return whether this email failed AUTH_LOGIN_MAX_FAILURES times lately, from anywhere."""
        failures = (
            LoginCounter.objects.filter(key=self.email_key, expires_at__gt=time.time())
            .values_list("count", flat=True)
            .first()
        )
        return (failures or 0) >= conf.login_max_failures

    def _slot(self, slot: Count) -> Count | None:
        """Return the slot taken, waiting up to SLOT_WAIT for one, or None."""
        cap = conf.login_email_concurrency
        deadline = time.monotonic() + SLOT_WAIT
        while slot.count > cap:
            _unbump([slot])
            while True:
                if time.monotonic() + SLOT_POLL > deadline:
                    return None
                time.sleep(SLOT_POLL)
                if _looks_free(self.slot_key, cap):
                    break
            slot = _bump({self.slot_key: SLOT_LIFETIME})[self.slot_key]
        return slot

    def succeeded(self) -> None:
        """The password was right: the pair's failures go, this attempt is no failure."""
        self._outcome = "success"

    def failed(self) -> None:
        """The backend refused the credentials: the attempt stays counted."""
        self._outcome = "failure"

    def finish(self) -> None:
        """Settle the attempt (nothing marked: it was no failure) and free its slot."""
        if not self._held:
            return
        pair, pair_busy, client, client_busy, *slot = self._held
        self._held = []
        try:
            if self._outcome == "success":
                LoginCounter.objects.filter(key=pair.key).delete()
                _unbump([pair_busy, client, client_busy, *slot])
            elif self._outcome == "failure":
                _bump({self.email_key: conf.login_throttle_window})
                _unbump([pair_busy, client_busy, *slot])
            else:
                _unbump([pair, pair_busy, client, client_busy, *slot])
        except DatabaseError:
            logger.warning(
                "Sign-in throttle could not settle an attempt; its counts age out", exc_info=True
            )
