"""What the sign-in path reports as it goes, for whoever observes it.

The token core sends these signals and knows nothing of who listens:
accounts/ops/metrics.py connects receivers that count each event in Prometheus
and in the health page's timeline. A project may connect its own (an audit
log, another metrics system) as it would to Django's `user_logged_in`.

Each signal is sent with `sender=None` and the keyword arguments below. A
receiver that raises is logged and skipped (`send_robust`): observing must
never cost a user a page. The functions below the signals are what the core
calls.
"""

from django.dispatch import Signal

from .reasons import Reason

# A call to the backend's refresh ended: outcome = ok, refused, transient or unknown.
refresh_call_ended = Signal()
# A request got a refresh's result without calling: how = shared (at once) or waited;
# waited = the seconds it waited.
refresh_result_served = Signal()
# A request waited `seconds` for a refresh (its own call's or another's).
refresh_waited = Signal()
# A refresh token was about to be presented a second time (it was not).
refresh_reuse_suspected = Signal()
# One call to the backend: endpoint (login, refresh, logout, me, proxy, health),
# status (the answer's, or "error"), seconds.
backend_called = Signal()
# A sign-in attempt ended: outcome (ok, wrong_password, no_allowed_role, throttled,
# backend_down, backend_unusable, token_too_large).
sign_in_ended = Signal()
# Sessions ended: reason (accounts/reasons.py), count.
sessions_ended = Signal()
# The sign-in throttle decided: decision = allowed or refused.
throttle_decided = Signal()
# The /api/ proxy answered: status.
proxy_answered = Signal()


def _send(signal: Signal, **kwargs) -> None:
    # send_robust logs a receiver's exception (logger "django.dispatch") and goes on.
    signal.send_robust(sender=None, **kwargs)


def refresh_call(outcome: str) -> None:
    _send(refresh_call_ended, outcome=outcome)


def refresh_served(how: str, waited: float) -> None:
    _send(refresh_result_served, how=how, waited=waited)


def refresh_wait(seconds: float) -> None:
    _send(refresh_waited, seconds=seconds)


def reuse_suspect() -> None:
    _send(refresh_reuse_suspected)


def backend_call(endpoint: str, status: int | str, seconds: float) -> None:
    _send(backend_called, endpoint=endpoint, status=status, seconds=seconds)


def sign_in(outcome: str) -> None:
    _send(sign_in_ended, outcome=outcome)


def sign_out(reason: Reason, n: int = 1) -> None:
    _send(sessions_ended, reason=reason, count=n)


def throttle(decision: str) -> None:
    _send(throttle_decided, decision=decision)


def proxy(status: int) -> None:
    _send(proxy_answered, status=status)
