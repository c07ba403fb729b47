"""The token-refresh middleware: the article's server-side refresh, before every view."""

import contextlib
import logging
import time

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse

from . import cookies
from .conf import conf
from .exceptions import BackendError, SessionExpired, Throttled
from .session import RequestAuth, json_error, sign_out, wants_json
from .tokens import access_token_claims

logger = logging.getLogger(__name__)

EXEMPT_URL_NAMES = ("logout", "healthz")


class TokenRefreshMiddleware:
    """Refresh the tokens before the view when the access token is missing or expiring.

    Needs SessionMiddleware and AuthenticationMiddleware before it. For a
    signed-in user it:

    - signs out a session whose request carries neither token cookie;
    - refreshes (single flight, `accounts.refresh`) when the access cookie is
      missing or its JWT `exp` is within AUTH_REFRESH_LEEWAY (at most half the
      token's lifetime); an access token that is not a JWT is refreshed only
      when missing or rejected (the client's 401 replay);
    - puts the new tokens in `request.COOKIES`, re-reads the profile, and
      writes the new cookies onto whatever response the view returns;
    - on a refused refresh signs out: JSON callers get 401, pages go on as
      anonymous (so `login_required` sends them to the login page with `next`);
    - on a transient failure keeps the session and serves the view; only what
      needs the backend answers 503 (`process_exception`).

    Subclass and override `needs_refresh` to change the decision.
    """

    def __init__(self, get_response):
        self.get_response = get_response
        self._exempt_paths = None

    def __call__(self, request: HttpRequest):
        if not hasattr(request, "user"):
            raise ImproperlyConfigured(
                "TokenRefreshMiddleware requires django.contrib.auth.middleware."
                "AuthenticationMiddleware before it in MIDDLEWARE."
            )
        request.auth = RequestAuth(request)
        response = None
        if request.path not in self.exempt_paths:
            response = self.before_view(request)
        if response is None:
            response = self.get_response(request)
        cookies.relay(request, response)
        return response

    @property
    def exempt_paths(self) -> frozenset[str]:
        if self._exempt_paths is None:
            paths = set()
            for name in EXEMPT_URL_NAMES:
                with contextlib.suppress(NoReverseMatch):
                    paths.add(reverse(name))
            self._exempt_paths = frozenset(paths)
        return self._exempt_paths

    def needs_refresh(self, request: HttpRequest) -> bool:
        """Return whether this request should refresh before its view."""
        tokens = request.auth.tokens
        if not tokens.refresh:
            return False
        if not tokens.access:
            return True
        claims = access_token_claims(tokens.access)
        exp = claims.get("exp") if claims else None
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            return False
        leeway = conf.refresh_leeway
        iat = claims.get("iat")
        if isinstance(iat, int | float) and not isinstance(iat, bool) and exp > iat:
            # Never more than half the lifetime, or short tokens refresh every time.
            leeway = min(leeway, (exp - iat) / 2)
        return exp - time.time() <= leeway

    def before_view(self, request: HttpRequest):
        if not request.user.is_authenticated:
            return None
        tokens = request.auth.tokens
        if not tokens.access and not tokens.refresh:
            logger.info("Signed-in session without token cookies; signing out")
            sign_out(request)
            return None
        if not self.needs_refresh(request):
            return None
        logger.debug("Access token missing or expiring; refreshing before the view")
        try:
            request.auth.refresh()
        except SessionExpired:
            return self.signed_out_response(request)
        except BackendError as exc:
            logger.warning("Refresh failed transiently (%s); keeping the session", exc)
        return None

    def process_exception(self, request: HttpRequest, exception: Exception):
        if isinstance(exception, SessionExpired):
            if request.user.is_authenticated:
                sign_out(request)
            return self.signed_out_response(request) or redirect_to_login(request.get_full_path())
        if isinstance(exception, Throttled):
            if wants_json(request):
                response = json_error(429, "throttled", "Too many requests; try again later.")
            else:
                context = {"retry_after": exception.retry_after}
                response = render(request, "429.html", context, status=429)
            response["Retry-After"] = str(exception.retry_after)
            return response
        if isinstance(exception, BackendError):
            logger.warning("Auth backend unavailable for %s: %s", request.path, exception)
            if wants_json(request):
                response = json_error(
                    503, "backend_unavailable", "The sign-in service did not answer; try again."
                )
            else:
                response = render(request, "503.html", status=503)
            response["Retry-After"] = "5"
            return response
        return None

    @staticmethod
    def signed_out_response(request: HttpRequest):
        """401 JSON for scripts; None for pages (the view decides, as for anyone anonymous)."""
        if wants_json(request):
            return json_error(401, "signed_out", "Your session has ended; please sign in again.")
        return None
