"""The token middleware: check, refresh and revalidate before every view."""

import logging

from django.contrib import auth
from django.contrib.auth import middleware as auth_middleware
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from django.shortcuts import render
from django.utils.functional import SimpleLazyObject

from . import signals
from .backends import offering
from .conf import conf
from .exceptions import BackendError, SessionEnded, Throttled, TokensRefused
from .responses import json_error, wants_json
from .signout import end_session
from .state import TokenState

logger = logging.getLogger(__name__)


class AuthenticationMiddleware(auth_middleware.AuthenticationMiddleware):
    """Django's, with `request.user` read from the row the session query brought.

    accounts/sessions.py reads a request's session and its user in one join;
    this offers that row to the backend's `get_user`, so Django's
    `auth.get_user` runs unchanged (the session's user id, its password hash)
    without a second query. Any other session store: Django's behaviour.
    """

    def process_request(self, request):
        super().process_request(request)
        request.user = SimpleLazyObject(lambda: _user(request))


def _user(request: HttpRequest):
    if not hasattr(request, "_cached_user"):
        session = request.session
        # Reading the session loads it, and with it the row (accounts/sessions.py).
        row = getattr(session, "prefetched_user", None) if auth.SESSION_KEY in session else None
        with offering(row):
            request._cached_user = auth.get_user(request)
    return request._cached_user


class TokenRefreshMiddleware:
    """Keep a signed-in session and its token cookies in step, before every view.

    Needs SessionMiddleware and AuthenticationMiddleware before it. It puts a
    `TokenState` on every request (`request.token_state`) and, for sessions
    signed in through `AuthApiBackend`, on views neither marked `token_exempt`
    (accounts/decorators.py) nor named in AUTH_EXEMPT_URLS:

    - ends the session when the cookies are not the session's own pair
      (`TokenState.check`);
    - starts the refresh when the access token, by the expiry recorded at
      issue, is within AUTH_REFRESH_LEEWAY (or missing); the request waits for
      it (one budget per request) only at its first backend call, so a view
      that needs no backend is served from the session however slow the
      refresh is;
    - re-reads the user every AUTH_REVALIDATE_INTERVAL seconds;
    - on a transient failure keeps the session and serves the view; only what
      needs the backend answers 503 (`process_exception`);
    - writes the new cookies onto whatever response goes out.

    Subclass and override `process_signed_in` to change what happens.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        if not hasattr(request, "user"):
            raise ImproperlyConfigured(
                "TokenRefreshMiddleware requires django.contrib.auth.middleware."
                "AuthenticationMiddleware before it in MIDDLEWARE."
            )
        state = TokenState.of(request)
        response = self.get_response(request)
        state.finish(response)
        match = request.resolver_match
        if match is not None and getattr(match.func, "is_token_proxy", False):
            signals.proxy(response.status_code)  # whatever answered: the view or an error
        return response

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs):
        if getattr(view_func, "token_exempt", False):
            return None  # accounts/decorators.py
        match = request.resolver_match
        if match is not None and match.view_name in conf.exempt_urls:
            return None
        state = TokenState.of(request)
        if not state.applies():
            return None
        try:
            self.process_signed_in(state)
        except SessionEnded:
            return self.signed_out_response(request)
        except BackendError as exc:
            logger.warning("Auth backend failed transiently (%s); keeping the session", exc)
        return None

    def process_signed_in(self, state: TokenState) -> None:
        """Check the cookies, refresh if due, revalidate if due."""
        state.check()
        state.refresh_if_due()
        state.revalidate_if_due()

    def process_exception(self, request: HttpRequest, exception: Exception):
        if isinstance(exception, TokensRefused):
            # A view's backend call: the client only says so; the session ends here.
            end_session(request, exception.reason)
            return self.signed_out_response(request) or redirect_to_login(request.get_full_path())
        if isinstance(exception, SessionEnded):
            return self.signed_out_response(request) or redirect_to_login(request.get_full_path())
        if isinstance(exception, Throttled):
            if wants_json(request):
                response = json_error(429, "throttled", "Too many requests; try again later.")
            else:
                context = {"retry_after": exception.retry_after}
                response = render(request, "accounts/429.html", context, status=429)
            response["Retry-After"] = str(exception.retry_after)
            return response
        if isinstance(exception, BackendError):
            logger.warning("Auth backend unavailable for %s: %s", request.path, exception)
            if wants_json(request):
                response = json_error(
                    503, "backend_unavailable", "The sign-in service did not answer; try again."
                )
            else:
                response = render(request, "accounts/503.html", status=503)
            response["Retry-After"] = "5"
            return response
        return None

    @staticmethod
    def signed_out_response(request: HttpRequest):
        """401 JSON for scripts; None for pages (the view decides, as for anyone anonymous)."""
        if wants_json(request):
            return json_error(401, "signed_out", "Your session has ended; please sign in again.")
        return None
