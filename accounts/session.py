"""One request's tokens, and the rule that the session and the tokens live and die together."""

import logging

from django.contrib.auth import logout
from django.http import HttpRequest, JsonResponse
from django.views.decorators.debug import sensitive_variables

from . import cookies
from .backends import roles_allowed
from .client import Tokens, get_client
from .conf import conf
from .exceptions import BackendError, RefreshRejected, SessionExpired
from .models import User, UserProfile
from .refresh import refresh_tokens

logger = logging.getLogger(__name__)


class RequestAuth:
    """The tokens one request holds, renewed at most once through the single flight.

    The middleware puts one on every request as `request.auth`; the backend
    client takes it as its TokenSource, so a 401 anywhere refreshes and replays.
    """

    def __init__(self, request: HttpRequest):
        self.request = request
        self.tokens = Tokens.from_cookies(request.COOKIES)
        self.refreshed = False
        self.failure: BackendError | None = None

    @sensitive_variables()
    def refresh(self) -> Tokens:
        """Renew the tokens, re-read the profile, queue the cookies; return the new tokens.

        :raises SessionExpired: refused refresh, or the user changed or lost every
            allowed role; the user is signed out already.
        :raises BackendUnavailable: transient; the session is kept, and this
            request does not try again.
        """
        if self.refreshed:
            return self.tokens
        if self.failure is not None:
            raise self.failure
        if not self.tokens.refresh:
            sign_out(self.request)
            raise SessionExpired("no refresh token")
        try:
            outcome = refresh_tokens(self.tokens.refresh)
        except RefreshRejected as exc:
            sign_out(self.request)
            raise SessionExpired("the backend refused the refresh token") from exc
        except BackendError as exc:
            self.failure = exc
            raise
        cookies.remember(self.request, outcome.cookies)
        self.tokens = self.tokens.updated_by(outcome.cookies)
        # The view and every later backend call of this request see the new tokens.
        for name, value in zip(
            conf.token_cookies, (self.tokens.access, self.tokens.refresh), strict=True
        ):
            if value:
                self.request.COOKIES[name] = value
        self.refreshed = True
        self._revalidate(outcome.profile)
        return self.tokens

    @sensitive_variables()
    def _revalidate(self, profile: UserProfile | None) -> None:
        if profile is None:
            try:
                profile = get_client().me(self.tokens)
            except SessionExpired:
                sign_out(self.request)
                raise
            except BackendError as exc:
                logger.info("Profile not re-read after refresh (%s); keeping the session", exc)
                return
        user = self.request.user
        if getattr(user, "backend_id", None) != profile.id:
            logger.warning("The backend names another user than the session's; signing out")
            sign_out(self.request)
            raise SessionExpired("the tokens belong to another user")
        if not roles_allowed(profile.roles):
            logger.info("Backend user %s lost every allowed role; signing out", profile.id)
            sign_out(self.request)
            raise SessionExpired("no allowed role any more")
        self.request.user = User.objects.sync_from_profile(profile)


def sign_out(request: HttpRequest) -> None:
    """End the session and drop the token cookies, on the request and the response."""
    logout(request)
    cookies.forget(request)
    for name in conf.token_cookies:
        request.COOKIES.pop(name, None)
    auth = getattr(request, "auth", None)
    if auth is not None:
        auth.tokens = Tokens()


def wants_json(request: HttpRequest) -> bool:
    """Return whether the caller is a script (fetch/XHR, the /api/ proxy), not a page load."""
    if request.path.startswith("/api/"):
        return True
    if request.headers.get("X-Requested-With") == "XMLHttpRequest":
        return True
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def json_error(status: int, error: str, message: str, **extra) -> JsonResponse:
    """Return the JSON error shape of this app's script-facing endpoints."""
    return JsonResponse({"ok": False, "error": error, "message": message, **extra}, status=status)
