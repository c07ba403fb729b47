"""Login throttling of the reference API: failed attempts per (account, client) and per client.

Failures are rows in the database, so every thread of the API process (and a
second API process on the same database) counts the same attempts. Two
limits, each over AUTHAPI_LOGIN_WINDOW seconds:

- AUTHAPI_LOGIN_MAX_FAILURES_PER_ACCOUNT failures for one account from one
  client lock out that pair, and nobody else;
- AUTHAPI_LOGIN_MAX_FAILURES_PER_IP failures from one client, whatever the
  accounts, lock out that client (one place guessing many accounts).

There is no lockout per account alone: failures from elsewhere would lock
its owner out everywhere, renewable at will by anyone who knows the email.
A success clears its pair's failures; the client's stay until they age out.

Accounts are counted by a folded form of the email (`account_key`), so that
spellings the database matches to one account count as one.
"""

import hashlib
import ipaddress
import math
import unicodedata
from datetime import timedelta

from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from .conf import api_settings
from .models import LoginFailure

KEY_LENGTH = LoginFailure._meta.get_field("email").max_length


def client_ip(request: HttpRequest) -> str:
    """Return the caller's IP, believing X-Forwarded-For only from trusted proxies.

    The web app calls the API from its own address; it passes the browser's
    address on so that one person's failures do not throttle everyone.
    """
    remote = request.META.get("REMOTE_ADDR", "") or "0.0.0.0"  # noqa: S104 - not a bind
    if remote in api_settings.trusted_proxies:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        candidate = forwarded.rsplit(",", 1)[-1].strip()
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            pass
    return remote


def account_key(email: str) -> str:
    """Return the form of `email` that failures are counted under.

    NFKC folds compatibility forms (fullwidth letters), `casefold` folds case
    beyond ASCII, and the upper-then-lower round trip folds what only
    uppercase joins: PostgreSQL's case-insensitive match (`UPPER(a) =
    UPPER(b)`) takes a dotless `ı` for `i`, so `admın@` signs in as `admin@`.
    """
    folded = unicodedata.normalize("NFKC", email.strip()).casefold().upper().lower()
    if len(folded) <= KEY_LENGTH:
        return folded
    # NFKC can lengthen a string many times over; a cut key would never match its rows.
    return hashlib.sha256(folded.encode("utf-8", "surrogatepass")).hexdigest()


def _recent(now) -> QuerySet:
    return LoginFailure.objects.filter(
        created_at__gt=now - timedelta(seconds=api_settings.login_window)
    )


def retry_after(*, email: str, ip: str) -> int | None:
    """Return seconds until `email` from `ip` may try again, or None if it may now."""
    now = timezone.now()
    window = timedelta(seconds=api_settings.login_window)
    pair = _recent(now).filter(email=account_key(email), ip=ip)
    client = _recent(now).filter(ip=ip)
    waits = []
    for recent, limit in (
        (pair, api_settings.max_failures_per_account),
        (client, api_settings.max_failures_per_ip),
    ):
        count = recent.count()
        if count >= limit:
            # Allowed again once enough failures age out to bring the count below the limit.
            pivot = recent.order_by("created_at").values_list("created_at", flat=True)[
                count - limit
            ]
            waits.append((pivot + window - now).total_seconds())
    if not waits:
        return None
    return max(1, math.ceil(max(waits)))


def record_failure(*, email: str, ip: str) -> None:
    """Count one failed attempt and forget those older than the window."""
    LoginFailure.objects.create(email=account_key(email), ip=ip)
    cutoff = timezone.now() - timedelta(seconds=api_settings.login_window)
    LoginFailure.objects.filter(created_at__lt=cutoff).delete()


def clear_failures(*, email: str, ip: str) -> None:
    """Forget the failures of `email` from `ip` after it signed in from there."""
    LoginFailure.objects.filter(email=account_key(email), ip=ip).delete()
