"""Sign-in, sign-out and the browser's refresh (the readiness probe: accounts/ops/health.py)."""

import logging
import math
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.db import DatabaseError, transaction
from django.http import HttpRequest, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect, resolve_url
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.formats import date_format
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.module_loading import import_string
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from . import cookies, revocations, shape, signals, throttle, users
from .conf import conf
from .exceptions import (
    BackendError,
    BackendProtocolError,
    BackendUnavailable,
    CookieTooLarge,
    SessionEnded,
    Throttled,
)
from .forms import LoginForm
from .reasons import Reason
from .responses import json_error, json_view, wants_json
from .signout import end_session
from .state import TokenState

logger = logging.getLogger(__name__)


def safe_next(request: HttpRequest, url: str | None) -> str:
    """Return `url` stripped if it is a same-host URL that cannot name another host, else "".

    Django judges `next` with its surrounding whitespace stripped but returns
    it unstripped: "// " passes as "//" and goes out as "//%20", a URL naming
    a host. So the stripped value is judged again and sent, and nothing that
    starts like a host ("//", "/\\", "\\") is, whatever Django thinks of it.
    """
    url = (url or "").strip()
    if not url or url.startswith(("//", "/\\", "\\")):
        return ""
    allowed = url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return url if allowed else ""


class SafeNextMixin:
    """`get_redirect_url()` through `safe_next`, for Django's LoginView and LogoutView."""

    def get_redirect_url(self) -> str:
        return safe_next(self.request, super().get_redirect_url())


# When a throttled person may try again is said to the minute once the wait is
# that long: "about 5 minutes (at 14:05 UTC)", not "295 seconds".
WHEN_FORMAT = "H:i T"


def wait_phrase(seconds: int) -> str:
    """Return "about 5 minutes (until 14:05 UTC)" for a wait; seconds when under a minute."""
    if seconds < 60:
        return ngettext("%(count)d second", "%(count)d seconds", seconds) % {"count": seconds}
    minutes = max(1, round(seconds / 60))
    until = timezone.localtime(timezone.now() + timedelta(seconds=seconds))
    return ngettext(
        "about %(count)d minute (until %(time)s)",
        "about %(count)d minutes (until %(time)s)",
        minutes,
    ) % {"count": minutes, "time": date_format(until, WHEN_FORMAT)}


# The throttle's counts must be seen by every other attempt at once, never
# held back (and their rows locked) by a request-wide transaction.
@method_decorator(transaction.non_atomic_requests, name="dispatch")
class LoginView(SafeNextMixin, auth_views.LoginView):
    """The sign-in form (`email`, `password`, `next`).

    Django's LoginView does the rest: CSRF, `never_cache`, sensitive POST
    parameters, `login()` (a new session key) and the safe-`next` check
    (`url_has_allowed_host_and_scheme`, same host only). This adds the
    sign-in throttle (accounts/throttle.py), the relay of the backend's token
    cookies and the 429/503 answers.
    """

    form_class = LoginForm
    template_name = "accounts/login.html"

    def post(self, request, *args, **kwargs):
        # Counted before the password is checked, settled after (accounts/throttle.py).
        self.attempt = throttle.SignInAttempt(request, email=request.POST.get("email", "")[:254])
        wait = self.attempt.start()
        signals.throttle("allowed" if wait is None else "refused")
        if wait is not None:
            signals.sign_in("throttled")
            return self._throttled(wait)
        try:
            return super().post(request, *args, **kwargs)
        except Throttled as exc:
            signals.sign_in("throttled")
            return self._throttled(exc.retry_after)
        except CookieTooLarge:
            signals.sign_in("token_too_large")
            # The tokens were revoked and nothing was set; the log says which
            # cookie and how large (accounts/backends.py).
            return self._service_error(
                502,
                _("Sign-in could not be completed"),
                _(
                    "The sign-in service issued a token too large for your browser to keep. "
                    "Nothing was changed; please tell the site's administrator."
                ),
            )
        except BackendProtocolError as exc:
            signals.sign_in("backend_unusable")
            # The message names what did not fit and the setting that fixes it.
            logger.error("Sign-in failed: the backend's answer did not fit the settings: %s", exc)
            shape.report(exc)
            return self._service_error(
                502,
                _("Sign-in could not be completed"),
                _(
                    "The sign-in service answered in a way this site could not use. Nothing "
                    "was changed; please try again later or tell the site's administrator."
                ),
            )
        except BackendError as exc:
            signals.sign_in("backend_down")
            logger.warning("Sign-in service unavailable: %s", exc)
            response = self._service_error(
                503,
                _("Sign-in service unavailable"),
                _("We could not reach the sign-in service. Please try again in a moment."),
            )
            if isinstance(exc, BackendUnavailable):
                response["Retry-After"] = "5"
            return response
        finally:
            self.attempt.finish()

    def _throttled(self, retry_after: float) -> TemplateResponse:
        seconds = max(1, math.ceil(retry_after))
        response = self._service_error(
            429,
            _("Too many sign-in attempts"),
            _("Please wait %(wait)s before you try again.") % {"wait": wait_phrase(seconds)},
        )
        response["Retry-After"] = str(seconds)
        return response

    def _service_error(self, status: int, title: str, detail: str) -> TemplateResponse:
        # Nothing was set: no session change, no cookies. The form keeps the email; it is
        # only shown again, never validated, so it needs no request.
        form = self.form_class(initial={"email": self.request.POST.get("email", "")[:254]})
        context = self.get_context_data(form=form, service_error={"title": title, "detail": detail})
        return self.render_to_response(context, status=status)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["home_url"] = home_url()
        if self.request.method == "GET" and not self.request.user.is_authenticated:
            context["sign_in_reason"] = self._why_here()
        return context

    def _why_here(self) -> str | None:
        """Say why an anonymous visitor was sent here, unless a message already does."""
        if len(messages.get_messages(self.request)):
            return None  # end_session said why (accounts/signout.py)
        if any(name in self.request.COOKIES for name in conf.token_cookies):
            # Token cookies without a sign-in: the session was ended elsewhere
            # (the sessions page, a back-channel sign-out) or ran out.
            return _("Your session has ended; please sign in again.")
        if self.get_redirect_url():
            return _("Please sign in to see that page.")
        return None

    def form_valid(self, form):
        # login() runs here; the token middleware records the pair in the new
        # session and relays the cookies as the response goes out.
        self.attempt.succeeded()
        signals.sign_in("ok")
        response = super().form_valid(form)
        user = form.get_user()
        name = users.display_name(user)
        messages.success(self.request, _("Signed in as %(name)s.") % {"name": name})
        return response

    def form_invalid(self, form):
        # Wrong credentials and refused accounts count; a malformed form does not.
        if form.has_error("__all__", "invalid_login"):
            signals.sign_in("wrong_password")
            self.attempt.failed()
        elif form.has_error("__all__", "access_refused"):
            signals.sign_in("no_allowed_role")
            self.attempt.failed()
        return super().form_invalid(form)


class LogoutView(SafeNextMixin, auth_views.LogoutView):
    """Sign-out: GET asks, POST signs out (CSRF): revoke at the backend, then `end_session`.

    GET shows a page with the sign-out button, as django-allauth does (a link
    must never sign anyone out: any site could embed one). A backend that
    cannot be reached does not keep anyone signed in here: the session ends
    and the cookies go regardless, and the revocation is queued
    (accounts/revocations.py) and retried until the token expires; the user is
    told so. A 401 from the backend means the token is no longer valid there:
    nothing to queue. A database that does not answer does not keep anyone
    signed in either (`_sign_out_without_database`). Token cookie values that
    are not cookie-octets count as absent, so sign-out always completes.
    Scripts get JSON instead of the redirect.
    """

    http_method_names = ["get", "post", "options"]
    template_name = "accounts/logout.html"

    def get_default_redirect_url(self):
        # Signed out, a person lands on LOGOUT_REDIRECT_URL, else the sign-in page:
        # never back on this page, which is for the signed in.
        return resolve_url(settings.LOGOUT_REDIRECT_URL or settings.LOGIN_URL)

    def get(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return HttpResponseRedirect(self.get_success_url())
        context = {"next": self.get_redirect_url(), "home_url": home_url()}
        return TemplateResponse(request, self.template_name, context)

    def post(self, request, *args, **kwargs):
        try:
            reason = self._revoke(TokenState.of(request))
            end_session(request, reason)
        except DatabaseError as exc:
            return self._sign_out_without_database(request, exc)
        response = super().post(request, *args, **kwargs)
        if wants_json(request):
            return self._json(reason)
        return response

    @staticmethod
    def _revoke(state: TokenState) -> Reason:
        """Revoke the pair at the backend, or queue it; return the sign-out's reason."""
        tokens = state.incoming
        if tokens.access or tokens.refresh:
            outcome = revocations.Revoker().revoke(tokens, record=state.load())
            if outcome == revocations.QUEUED:
                return Reason.REVOCATION_QUEUED
        return Reason.USER

    def _sign_out_without_database(self, request: HttpRequest, error: DatabaseError):
        """End the browser's side when the session cannot be read; revoke what it holds.

        The session store and the revocation queue are both in the database,
        so neither can be written: the browser forgets its session key and its
        token cookies, and the pair those cookies hold (cookie storage) is
        revoked at the backend at once. The session row, unreachable now,
        expires with its refresh token, and no browser holds its key any more.
        """
        logger.error("Sign-out without the database (%s): ending the browser's side", error)
        # A fresh, empty store: SessionMiddleware then deletes the session
        # cookie and writes nothing, instead of failing again on the way out.
        request.session = import_string(settings.SESSION_ENGINE).SessionStore()
        tokens = TokenState.of(request).from_cookies
        reason = Reason.USER
        if tokens.access or tokens.refresh:
            # No record to queue under (and no database to queue in): revoked or lost.
            revoker = revocations.Revoker()
            if revoker.revoke(tokens, record=None) != revocations.REVOKED:
                logger.error(
                    "Sign-out without the database: the backend was not told: %s", revoker.failure
                )
                reason = Reason.REVOCATION_LOST
        signals.sign_out(reason)
        messages.add_message(request, messages.INFO, reason.message, fail_silently=True)
        response = self._json(reason) if wants_json(request) else redirect(self.get_success_url())
        cookies.delete(response, conf.token_cookies)
        return response

    @staticmethod
    def _json(reason: Reason) -> JsonResponse:
        return JsonResponse(
            {
                "ok": True,
                # "lost": neither the database nor the backend answered (the message says
                # what the user can do about it)
                "revocation": {Reason.USER: "done", Reason.REVOCATION_QUEUED: "queued"}.get(
                    reason, "lost"
                ),
                "message": str(reason.message),
            }
        )


@json_view
@never_cache
@require_POST
def refresh(request: HttpRequest) -> JsonResponse:
    """The browser's refresh: `POST /accounts/refresh/` (CSRF, same origin).

    Renews the tokens through the same single flight as the middleware (once
    per request: if the middleware just refreshed, that result is the answer)
    and reports when the new access token expires.
    """
    state = TokenState.of(request)
    if not state.applies() or state.record is None:
        return json_error(401, "signed_out", "Your session has ended; please sign in again.")
    try:
        state.renew_for_browser()
    except SessionEnded:
        return json_error(401, "signed_out", "Your session has ended; please sign in again.")
    except BackendError as exc:
        logger.warning("Browser refresh failed transiently: %s", exc)
        return json_error(
            503, "backend_unavailable", "The sign-in service did not answer; try again."
        )
    expires = state.record.access_expires_at
    return JsonResponse(
        {
            "ok": True,
            "access_expires_at": datetime.fromtimestamp(expires, UTC).isoformat()
            if expires
            else None,
        }
    )


def home_url() -> str:
    """Where a signed-in person goes from the package's pages: LOGIN_REDIRECT_URL."""
    return resolve_url(settings.LOGIN_REDIRECT_URL)


def csrf_failure(request: HttpRequest, reason: str):
    """CSRF refusals: JSON for scripts; for people, a page with a way back.

    A sign-in form left open past its CSRF cookie's life (or one whose
    cookie the browser dropped) is the usual cause: the page offers the
    sign-in form again, keeping a safe `next`. Django's `reason` is for the
    log, where CsrfViewMiddleware has written it already; neither answer
    shows it.
    """
    if wants_json(request):
        return json_error(403, "csrf", "CSRF verification failed; reload the page and try again.")
    login = reverse("accounts:login")
    next_url = safe_next(request, request.POST.get("next") or request.GET.get("next"))
    if not next_url and request.path != login:
        next_url = safe_next(request, request.get_full_path())
    back = f"{login}?{urlencode({'next': next_url})}" if next_url else login
    context = {"back": back, "signed_in": request.user.is_authenticated, "home_url": home_url()}
    return TemplateResponse(request, "accounts/403_csrf.html", context, status=403)
