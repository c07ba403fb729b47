"""What the sign-in and refresh path is doing, for operators: Prometheus metrics.

The functions below are the one place an event is recorded (the core sends
its events as signals, accounts/signals.py, and the receivers below call
them), and each records it on both sides: in Prometheus metrics (`/metrics`, only with AUTH_METRICS,
answering only AUTH_METRICS_ALLOWED_IPS or the bearer AUTH_METRICS_TOKEN) and
in the per-minute timeline the admin's health page draws
(accounts/ops/timeline.py, always), with the same labels and the same latency
buckets (accounts/ops/events.py). `active_sessions()` is the one count of who is
signed in, for the `auth_sessions` gauge and the health page. Under gunicorn every worker writes its
counts to files in PROMETHEUS_MULTIPROC_DIR (gunicorn.conf.py makes one), and
a scrape of any worker adds them all up (prometheus-client's multiprocess
mode); under `runserver` and in tests, one process keeps them in memory.

The metrics, each with one line of meaning, are listed in docs/operations.md
("Metrics"); their definitions are below.
"""

import hmac
import logging
import os

from django.apps import apps
from django.db import DatabaseError
from django.db.models import Count
from django.dispatch import receiver
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

from .. import signals
from ..conf import conf
from ..forwarded import client_ip
from ..pacing import AtMostEvery
from ..reasons import Reason
from . import timeline
from .events import LATENCY, LATENCY_BUCKETS, REFRESH_WAIT

logger = logging.getLogger(__name__)
_warn = AtMostEvery(60)

REFRESH_CALLS = Counter("auth_refresh_calls", "Calls to the backend's refresh", ["outcome"])
REFRESH_SERVED = Counter(
    "auth_refresh_served", "Requests served a refresh's result without calling", ["how"]
)
REFRESH_WAIT_SECONDS = Histogram(
    "auth_refresh_wait_seconds", "Time a request waited for a refresh", buckets=LATENCY_BUCKETS
)
REUSE_SUSPECT = Counter(
    "auth_refresh_reuse_suspect", "Refresh tokens about to be presented a second time (not sent)"
)
BACKEND_CALLS = Counter(
    "auth_backend_requests", "Calls to the auth backend", ["endpoint", "status"]
)
BACKEND_SECONDS = Histogram(
    "auth_backend_request_seconds",
    "Latency of calls to the auth backend",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
SIGN_INS = Counter("auth_sign_ins", "Sign-in attempts by outcome", ["outcome"])
SIGN_OUTS = Counter("auth_sign_outs", "Sessions ended, by reason", ["reason"])
THROTTLE = Counter("auth_sign_in_throttle", "Sign-in throttle decisions", ["decision"])
PROXY = Counter("auth_proxy_requests", "Answers of the /api/ proxy", ["status"])


# --- recording (never raises: an operator's view must not cost a user a page) -------


def refresh_call(outcome: str) -> None:
    """A call to the backend's refresh ended: ok, refused, transient or unknown."""
    _count(REFRESH_CALLS, "refresh", outcome)


def refresh_served(how: str, waited: float) -> None:
    """A request got a refresh's result without calling: `shared` at once, or `waited`."""
    _count(REFRESH_SERVED, "refresh_served", how)
    refresh_wait(waited)


def refresh_wait(seconds: float) -> None:
    """A request waited `seconds` for a refresh (its own call's or another's)."""
    if seconds > 0:
        _observe(REFRESH_WAIT_SECONDS, REFRESH_WAIT, "all", seconds)


def reuse_suspect() -> None:
    """A refresh token was about to be presented a second time (it was not)."""
    if conf.metrics:
        _safely(REUSE_SUSPECT.inc)
    _safely(timeline.count, "reuse_suspect", "suspect")


def backend_call(endpoint: str, status: int | str, seconds: float) -> None:
    """One call to the backend: its endpoint, the answer's status (or "error"), its latency."""
    if conf.metrics:
        _safely(BACKEND_CALLS.labels(endpoint=endpoint, status=str(status)).inc)
    _observe(BACKEND_SECONDS.labels(endpoint=endpoint), LATENCY, endpoint, seconds)


def sign_in(outcome: str) -> None:
    _count(SIGN_INS, "sign_in", outcome)


def sign_out(reason: Reason, n: int = 1) -> None:
    _count(SIGN_OUTS, "sign_out", reason, n)


def throttle(decision: str) -> None:
    _count(THROTTLE, "throttle", decision)


def proxy(status: int) -> None:
    _count(PROXY, "proxy", str(status))


# --- the core's events (accounts/signals.py), each recorded by the function above ----
# Each receiver looks its function up when called, so a test may replace one.


@receiver(signals.refresh_call_ended)
def _refresh_call_ended(sender, *, outcome, **kwargs):
    refresh_call(outcome)


@receiver(signals.refresh_result_served)
def _refresh_result_served(sender, *, how, waited, **kwargs):
    refresh_served(how, waited)


@receiver(signals.refresh_waited)
def _refresh_waited(sender, *, seconds, **kwargs):
    refresh_wait(seconds)


@receiver(signals.refresh_reuse_suspected)
def _refresh_reuse_suspected(sender, **kwargs):
    reuse_suspect()


@receiver(signals.backend_called)
def _backend_called(sender, *, endpoint, status, seconds, **kwargs):
    backend_call(endpoint, status, seconds)


@receiver(signals.sign_in_ended)
def _sign_in_ended(sender, *, outcome, **kwargs):
    sign_in(outcome)


@receiver(signals.sessions_ended)
def _sessions_ended(sender, *, reason, count, **kwargs):
    sign_out(reason, count)


@receiver(signals.throttle_decided)
def _throttle_decided(sender, *, decision, **kwargs):
    throttle(decision)


@receiver(signals.proxy_answered)
def _proxy_answered(sender, *, status, **kwargs):
    proxy(status)


def _count(metric: Counter, series: str, label: str, n: int = 1) -> None:
    if conf.metrics:
        _safely(metric.labels(label).inc, n)
    _safely(timeline.count, series, label, n)


def _observe(histogram, series: str, label: str, seconds: float) -> None:
    if conf.metrics:
        _safely(histogram.observe, seconds)
    _safely(timeline.observe, series, label, seconds)


def _safely(function, *args) -> None:
    try:
        function(*args)
    except Exception:  # noqa: BLE001 - counting must never fail a request
        logger.exception("A metric could not be recorded")


# --- who is signed in ---------------------------------------------------------------


def active_sessions() -> dict[str, int] | None:
    """Return unexpired signed-in sessions by token storage ("" when unknown); None if unread.

    The one count: the `auth_sessions` gauge and the health page both show it.
    It reads accounts.usersessions' index, so it needs that app: without it,
    None.
    """
    if not apps.is_installed("accounts.usersessions"):
        return None
    from ..usersessions.models import UserSession  # when used: importing this needs no models

    try:
        rows = (
            UserSession.objects.live()
            .values_list("token_storage")
            .annotate(n=Count("pk"))
            .order_by("token_storage")
        )
        return {storage: n for storage, n in rows}
    except DatabaseError:
        if _warn.due():
            logger.warning("The signed-in sessions could not be counted", exc_info=True)
        return None


class SessionsCollector:
    """`auth_sessions{storage}`: `active_sessions()` at each scrape ("other": unknown)."""

    def collect(self):
        counts = active_sessions()
        if counts is None:
            return
        gauge = GaugeMetricFamily(
            "auth_sessions", "Signed-in sessions, by where their tokens are", labels=["storage"]
        )
        counts = {storage or "other": n for storage, n in counts.items()}
        for storage in ("cookies", "session", *sorted(set(counts) - {"cookies", "session"})):
            gauge.add_metric([storage], counts.get(storage, 0))
        yield gauge


# --- /metrics ---------------------------------------------------------------------


@never_cache
def metrics_view(request: HttpRequest) -> HttpResponse:
    """`GET /metrics`: 404 unless AUTH_METRICS; 403 but to an allowed address or the token."""
    if not conf.metrics:
        raise Http404("Metrics are off (AUTH_METRICS)")
    if not _allowed(request):
        return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_InProcess())
    registry.register(SessionsCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


class _InProcess:
    """This process's own metrics (no multiprocess directory: runserver, tests)."""

    def collect(self):
        for metric in (
            REFRESH_CALLS,
            REFRESH_SERVED,
            REFRESH_WAIT_SECONDS,
            REUSE_SUSPECT,
            BACKEND_CALLS,
            BACKEND_SECONDS,
            SIGN_INS,
            SIGN_OUTS,
            THROTTLE,
            PROXY,
        ):
            yield from metric.collect()


def _allowed(request: HttpRequest) -> bool:
    token = conf.metrics_token
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if token and header.startswith("Bearer "):
        return hmac.compare_digest(header[7:].encode(), token.encode())
    return client_ip(request) in conf.metrics_allowed_ips
