"""What the operators' views count, named once: each series, its labels, the latency buckets.

Every event goes through one function of accounts/ops/metrics.py, which records it
twice: in Prometheus (`/metrics`) and in the health page's per-minute timeline
(accounts/ops/timeline.py). Both take their labels from this module and put a
latency into the same bucket (LATENCY_BUCKETS), so the p50 and p95 the health
page shows are read from the buckets `histogram_quantile` reads from
`/metrics`, the same way (`quantile`).
"""

from prometheus_client.utils import floatToGoString

from ..reasons import Reason

# Seconds, each a bucket's upper bound: from a cached answer to a refresh
# stalled until AUTH_REFRESH_TIMEOUT (120 s). Past the last, "+Inf".
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)

# Histograms: series -> labels.
LATENCY = "latency"  # auth_backend_request_seconds{endpoint}
REFRESH_WAIT = "refresh_wait"  # auth_refresh_wait_seconds (no label: the timeline says "all")
ENDPOINTS = ("login", "refresh", "logout", "me", "proxy", "health")
HISTOGRAMS: dict[str, tuple[str, ...]] = {LATENCY: ENDPOINTS, REFRESH_WAIT: ("all",)}

# Counters: series -> labels. A label outside these still counts on both sides
# (the timeline registers it); a test keeps every caller inside them.
COUNTERS: dict[str, tuple[str, ...]] = {
    "refresh": ("ok", "refused", "transient", "unknown"),  # auth_refresh_calls{outcome}
    "refresh_served": ("shared", "waited"),  # auth_refresh_served{how}
    "reuse_suspect": ("suspect",),  # auth_refresh_reuse_suspect (no label)
    "sign_in": (  # auth_sign_ins{outcome}
        "ok",
        "wrong_password",
        "no_allowed_role",
        "throttled",
        "backend_down",
        "backend_unusable",
        "token_too_large",
    ),
    "sign_out": tuple(Reason),  # auth_sign_outs{reason}: accounts/reasons.py
    "throttle": ("allowed", "refused"),  # auth_sign_in_throttle{decision}
    "proxy": (),  # auth_proxy_requests{status}: whatever status answered
}


def bucket_of(seconds: float) -> int:
    """Return the index of the bucket `seconds` falls in (len(LATENCY_BUCKETS): past the last)."""
    for index, edge in enumerate(LATENCY_BUCKETS):
        if seconds <= edge:
            return index
    return len(LATENCY_BUCKETS)


def bucket_name(index: int) -> str:
    """Return a bucket's upper bound as `/metrics` writes its `le` label ("0.005", "+Inf")."""
    edge = LATENCY_BUCKETS[index] if index < len(LATENCY_BUCKETS) else float("inf")
    return floatToGoString(edge)


def quantile(counts: list[int] | tuple[int, ...], q: float) -> float | None:
    """Return the `q` quantile (0..1), in seconds, of per-bucket counts; None without any.

    Prometheus' `histogram_quantile`: linear inside the bucket the rank falls
    in, from 0 in the first, and the last finite bound past it.
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index, n in enumerate(counts):
        if n and seen + n >= rank:
            if index >= len(LATENCY_BUCKETS):
                return LATENCY_BUCKETS[-1]
            lower = LATENCY_BUCKETS[index - 1] if index else 0.0
            upper = LATENCY_BUCKETS[index]
            return lower + (upper - lower) * (rank - seen) / n
        seen += n
    return LATENCY_BUCKETS[-1]
