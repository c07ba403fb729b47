"""The small vocabulary of failures, in families that cannot be confused.

- `SessionEnded`: the sign-in is over (refused refresh, foreign cookies, lost
  role…). Raised only after `accounts.signout.end_session` has run.
- `TokensRefused`: the backend refuses the sign-in's tokens for good; whoever
  catches it ends the session (the HTTP client never does).
- `BackendError`: the backend failed *transiently* or answered nonsense. Never
  a reason to sign anyone out: serve what can be served, 503 for the rest.
- `InvalidCredentials`, `AccessRefused`, `CookieTooLarge`: answers to a
  sign-in attempt.

The families share no base class but `Exception`, so an `except
BackendError` can never swallow the end of a session, whatever the order of
the clauses. Messages carry the method, path and status, never a token.
"""

from typing import TYPE_CHECKING

from .outline import outline

if TYPE_CHECKING:
    from .reasons import Reason


class SessionEnded(Exception):
    """The user is signed out now; `reason` (accounts/reasons.py) says why."""

    def __init__(self, reason: "Reason", message: str = ""):
        super().__init__(message or reason)
        self.reason = reason


class TokensRefused(Exception):
    """The backend refuses this sign-in's tokens for good: a call refused again after
    this request's refresh, or `/users/me` forbidden. The client raises it and ends
    nothing; the request layer ends the session for `reason` (`TokenState` for its
    own calls, `TokenRefreshMiddleware.process_exception` for a view's).
    """

    def __init__(self, reason: "Reason"):
        super().__init__(reason)
        self.reason = reason


class BackendError(Exception):
    """A transient failure talking to the auth backend.

    `maybe_processed` is True when the backend may have acted on the call
    although no usable answer came back (a read timeout, a dropped
    connection, a 504): for a refresh, the token may be spent.
    """

    maybe_processed = False


class BackendUnavailable(BackendError):
    """Connection refused, timeout or a 5xx."""


class BackendProtocolError(BackendError):
    """The backend answered something this app cannot use (bad JSON, no cookies, 3xx…)."""


class ShapeMismatch(BackendProtocolError):
    """The backend answered, but not where the settings say to look (accounts/shape.py).

    The message says what did not fit and which setting fixes it, with the
    places that look right (`candidates`) and the answer's outline: names
    and types only, never a value. For the operator's log and health page;
    the user sees a plain sentence.
    """

    def __init__(self, what: str, setting: str, candidates=(), data=None):
        candidates = list(candidates)
        if candidates:
            found = f"found {', '.join(candidates[:4])}: set {setting}={candidates[0]}"
        else:
            found = f"check {setting}" + (f"; the answer was {outline(data)}" if data else "")
        super().__init__(f"{what}; {found}")
        self.setting = setting
        self.candidates = candidates


class Throttled(BackendError):
    """The backend throttled the call; `retry_after` is in seconds."""

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class RefreshPending(BackendUnavailable):
    """A refresh did not finish within this request's wait budget.

    The call goes on in the background; the next request collects its result.
    """


class InvalidCredentials(Exception):
    """The backend refused the email and password."""


class AccessRefused(Exception):
    """A valid account whose roles share nothing with AUTH_ALLOWED_ROLES."""


class CookieTooLarge(Exception):
    """In cookie mode, a token cookie the browser would drop: over the size browsers keep."""

    def __init__(self, name: str, size: int):
        super().__init__(f"the {name} cookie would be {size} bytes")
        self.name = name
        self.size = size
