"""The small vocabulary of auth-backend failures that views turn into pages.

Messages carry the method, path and status, never a token or a password.
"""


class BackendError(Exception):
    """Any failure talking to the auth backend."""


class BackendUnavailable(BackendError):
    """Connection refused, timeout or a 5xx: transient, never a reason to sign out."""


class BackendProtocolError(BackendError):
    """The backend answered something this app cannot use (bad JSON, no cookies, 3xx…)."""


class InvalidCredentials(BackendError):
    """The backend refused the email and password."""


class Throttled(BackendError):
    """The backend throttled sign-in; `retry_after` is in seconds."""

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class SessionExpired(BackendError):
    """The tokens no longer work: the user must sign in again."""


class RefreshRejected(BackendError):
    """The backend refused the refresh token (401/403): the session is over."""


class RefreshPending(BackendUnavailable):
    """Another request's refresh did not finish within this request's wait budget.

    The refresh goes on; the next request gets its result. Answer 503, "try again".
    """


class AccessRefused(Exception):
    """A valid account whose roles share nothing with AUTH_ALLOWED_ROLES."""
