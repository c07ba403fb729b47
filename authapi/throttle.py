"""Login throttling of the reference API: failed attempts per account and per IP.

Failures are rows in the database, so every thread of the API process (and a
second API process on the same database) counts the same attempts. A success
clears the account's failures; the IP's stay until they age out of the window.
"""

import ipaddress
import math
from datetime import timedelta

from django.http import HttpRequest
from django.utils import timezone

from .conf import api_settings
from .models import LoginFailure


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


def retry_after(*, email: str, ip: str) -> int | None:
    """Return seconds until `email` from `ip` may try again, or None if it may now."""
    now = timezone.now()
    window = timedelta(seconds=api_settings.login_window)
    waits = []
    for field, value, limit in (
        ("email", email, api_settings.max_failures_per_account),
        ("ip", ip, api_settings.max_failures_per_ip),
    ):
        recent = LoginFailure.objects.filter(**{field: value}, created_at__gt=now - window)
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
    LoginFailure.objects.create(email=email[:254], ip=ip)
    cutoff = timezone.now() - timedelta(seconds=api_settings.login_window)
    LoginFailure.objects.filter(created_at__lt=cutoff).delete()


def clear_failures(*, email: str) -> None:
    """Forget the account's failures after a successful sign-in."""
    LoginFailure.objects.filter(email=email).delete()
