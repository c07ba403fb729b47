"""Who the client is behind proxies: what a trusted proxy says, never what anyone else says.

`X-Forwarded-For` and `X-Request-ID` are headers any client can send. They
are believed only from a peer (`REMOTE_ADDR`) in AUTH_TRUSTED_PROXIES,
addresses or networks such as `10.0.0.0/8`, and only when
AUTH_TRUSTED_PROXY_COUNT says proxies are in front at all. Someone who
reaches gunicorn directly, past the balancer, is then known by their own
address: they cannot open `/metrics` as 127.0.0.1, rotate addresses past the
sign-in throttle, put a chosen address on the sessions page or have it
forwarded to the backend.

Used by the throttle (accounts/throttle.py), the device record
(accounts/usersessions/signins.py), `/metrics` (accounts/ops/metrics.py), sign-in's
forwarded address (accounts/backends.py) and the request id
(accounts/requestid.py). No model is imported here: the logging filter of
accounts/requestid.py is loaded with the settings.
"""

import ipaddress
import logging

from django.http import HttpRequest

from .conf import conf
from .pacing import AtMostEvery

logger = logging.getLogger(__name__)

WARNING_INTERVAL = 60.0

_no_proxy_count_warning = AtMostEvery(WARNING_INTERVAL)
_untrusted_peer_warning = AtMostEvery(WARNING_INTERVAL)


def from_trusted_proxy(request: HttpRequest) -> bool:
    """Return whether the request came from a proxy whose forwarding headers are believed."""
    if conf.trusted_proxy_count <= 0:
        return False
    try:
        peer = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    # A dual-stack listener sees an IPv4 proxy as ::ffff:a.b.c.d.
    candidates = [peer] if getattr(peer, "ipv4_mapped", None) is None else [peer, peer.ipv4_mapped]
    return any(address in network for address in candidates for network in conf.trusted_proxies)


def client_ip(request: HttpRequest) -> str:
    """Return the browser's IP: REMOTE_ADDR, or what the trusted proxies in front saw.

    With AUTH_TRUSTED_PROXY_COUNT = n and the peer in AUTH_TRUSTED_PROXIES,
    the n-th address from the right of X-Forwarded-For is the one the
    outermost trusted proxy received; anything further left is the client's
    to invent. The header ignored, it is logged once a minute per process:
    at ERROR with n = 0 (behind a proxy every client would share the proxy's
    address and its throttle), at WARNING from a peer not in
    AUTH_TRUSTED_PROXIES (a proxy nobody listed, or a client past it).
    """
    remote = request.META.get("REMOTE_ADDR", "")
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    count = conf.trusted_proxy_count
    if not count:
        if forwarded and _no_proxy_count_warning.due():
            logger.error(
                "X-Forwarded-For arrives but AUTH_TRUSTED_PROXY_COUNT=0: every client behind "
                "the proxy shares one throttle; set it to the number of proxies (if no proxy "
                "is in front of the app, a client sent the header itself)"
            )
        return remote
    if not from_trusted_proxy(request):
        if forwarded and _untrusted_peer_warning.due():
            logger.warning(
                "X-Forwarded-For from %s ignored: that peer is not in AUTH_TRUSTED_PROXIES "
                "(list the proxies' addresses there, or a client reached the app past them)",
                remote,
            )
        return remote
    hops = [hop for hop in (h.strip() for h in forwarded.split(",")) if hop]
    if len(hops) >= count:
        try:
            return str(ipaddress.ip_address(hops[-count]))
        except ValueError:
            pass
    return remote
