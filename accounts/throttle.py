"""Sign-in throttling in the app itself, on the shared cache.

Failed sign-ins are counted per client IP and per email in fixed windows of
AUTH_LOGIN_THROTTLE_WINDOW seconds. The counters live in Django's cache, so
with Redis every worker on every app server sees the same counts (with the
database cache, every worker of one machine). This is in front of whatever
the backend does: a throttled attempt never reaches it.
"""

import hashlib
import ipaddress
import math
import time

from django.core.cache import cache
from django.http import HttpRequest

from .conf import conf

PREFIX = "accounts:throttle"


def client_ip(request: HttpRequest) -> str:
    """Return the browser's IP: REMOTE_ADDR, or what the trusted proxies in front saw.

    With AUTH_TRUSTED_PROXY_COUNT = n, the n-th address from the right of
    X-Forwarded-For is the one the outermost trusted proxy received; anything
    further left is the client's to invent.
    """
    remote = request.META.get("REMOTE_ADDR", "")
    count = conf.trusted_proxy_count
    if count:
        hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        hops = [h for h in hops if h]
        if len(hops) >= count:
            try:
                return str(ipaddress.ip_address(hops[-count]))
            except ValueError:
                pass
    return remote


def _counters(request: HttpRequest, email: str) -> list[tuple[str, int]]:
    bucket = int(time.time() // conf.login_throttle_window)
    digest = lambda value: hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:32]  # noqa: E731
    return [
        (f"{PREFIX}:ip:{digest(client_ip(request))}:{bucket}", conf.login_max_failures_per_ip),
        (
            f"{PREFIX}:email:{digest(email.strip().lower())}:{bucket}",
            conf.login_max_failures_per_email,
        ),
    ]


def retry_after(request: HttpRequest, email: str) -> int | None:
    """Return seconds until this IP and email may try again, or None if they may now."""
    counters = _counters(request, email)
    counts = cache.get_many([key for key, _ in counters])
    if all(counts.get(key, 0) < limit for key, limit in counters):
        return None
    window = conf.login_throttle_window
    return max(1, math.ceil(window - time.time() % window))


def record_failure(request: HttpRequest, email: str) -> None:
    """Count one failed sign-in for the IP and the email."""
    for key, _ in _counters(request, email):
        cache.add(key, 0, conf.login_throttle_window + 5)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, conf.login_throttle_window + 5)


def clear_email(request: HttpRequest, email: str) -> None:
    """Forget the email's failures after it signed in (the IP's stay)."""
    cache.delete(_counters(request, email)[1][0])
