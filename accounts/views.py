"""Sign-in, sign-out and the browser's refresh (the readiness probe: accounts/health.py)."""

import logging
import math
from datetime import UTC, datetime

from django.contrib.auth import views as auth_views
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.template.response import TemplateResponse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views import csrf
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from . import metrics, revocations, shape, throttle
from .client import get_client
from .exceptions import (
    BackendError,
    BackendProtocolError,
    BackendUnavailable,
    CookieTooLarge,
    SessionEnded,
    Throttled,
)
from .forms import LoginForm
from .responses import json_error, json_view, wants_json
from .signout import MESSAGES as SIGN_OUT_MESSAGES
from .signout import end_session
from .state import TokenState

logger = logging.getLogger(__name__)


# The throttle's counts must be seen by every other attempt at once, never
# held back (and their rows locked) by a request-wide transaction.
@method_decorator(transaction.non_atomic_requests, name="dispatch")
class LoginView(auth_views.LoginView):
    """The sign-in form (`email`, `password`, `next`).

    Django's LoginView does the rest: CSRF, `never_cache`, sensitive POST
    parameters, `login()` (a new session key) and the safe-`next` check
    (`url_has_allowed_host_and_scheme`, same host only). This adds the
    sign-in throttle (accounts/throttle.py), the relay of the backend's token
    cookies and the 429/503 answers.
    """

    form_class = LoginForm
    template_name = "registration/login.html"

    def post(self, request, *args, **kwargs):
        # Counted before the password is checked, settled after (accounts/throttle.py).
        self.attempt = throttle.SignInAttempt(request, email=request.POST.get("email", "")[:254])
        wait = self.attempt.start()
        metrics.throttle("allowed" if wait is None else "refused")
        if wait is not None:
            metrics.sign_in("throttled")
            return self._throttled(wait)
        try:
            return super().post(request, *args, **kwargs)
        except Throttled as exc:
            metrics.sign_in("throttled")
            return self._throttled(exc.retry_after)
        except CookieTooLarge:
            metrics.sign_in("token_too_large")
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
            metrics.sign_in("backend_unusable")
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
            metrics.sign_in("backend_down")
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
            ngettext(
                "Please wait %(seconds)s second before you try again.",
                "Please wait %(seconds)s seconds before you try again.",
                seconds,
            )
            % {"seconds": seconds},
        )
        response["Retry-After"] = str(seconds)
        return response

    def _service_error(self, status: int, title: str, detail: str) -> TemplateResponse:
        # Nothing was set: no session change, no cookies. The form keeps the email.
        form = self.form_class(
            request=self.request, initial={"email": self.request.POST.get("email", "")[:254]}
        )
        context = self.get_context_data(form=form, service_error={"title": title, "detail": detail})
        return self.render_to_response(context, status=status)

    def get_redirect_url(self) -> str:
        # Django judges `next` with its surrounding whitespace stripped but
        # returns it unstripped: "// " passes as "//" and goes out as "//%20",
        # a URL naming a host. Send only what was judged, and never a URL
        # that starts like a host.
        url = super().get_redirect_url().strip()
        return "" if url.startswith(("//", "/\\", "\\")) else url

    def form_valid(self, form):
        # login() runs here; the token middleware records the pair in the new
        # session and relays the cookies as the response goes out.
        self.attempt.succeeded()
        metrics.sign_in("ok")
        return super().form_valid(form)

    def form_invalid(self, form):
        # Wrong credentials and refused accounts count; a malformed form does not.
        if form.has_error("__all__", "invalid_login"):
            metrics.sign_in("wrong_password")
            self.attempt.failed()
        elif form.has_error("__all__", "access_refused"):
            metrics.sign_in("no_allowed_role")
            self.attempt.failed()
        return super().form_invalid(form)


class LogoutView(auth_views.LogoutView):
    """POST-only sign-out: revoke at the backend, then `end_session`.

    A backend that cannot be reached does not keep anyone signed in here: the
    session ends and the cookies go regardless, and the revocation is queued
    (accounts/revocations.py) and retried until the token expires; the user is
    told so. A 401 from the backend means the token is no longer valid there:
    nothing to queue. Token cookie values that are not cookie-octets count as
    absent, so sign-out always completes. Scripts get JSON instead of the
    redirect.
    """

    def post(self, request, *args, **kwargs):
        state = TokenState.of(request)
        tokens = state.incoming
        reason = "user"
        if tokens.access or tokens.refresh:
            try:
                get_client().logout(tokens)
            except BackendError as exc:
                logger.warning("Sign-out could not revoke the tokens at the backend: %s", exc)
                if revocations.queue(tokens, record=state.load(), error=exc):
                    reason = "revocation_queued"
        end_session(request, reason)
        response = super().post(request, *args, **kwargs)
        if wants_json(request):
            return JsonResponse(
                {
                    "ok": True,
                    "revocation": "queued" if reason == "revocation_queued" else "done",
                    "message": str(SIGN_OUT_MESSAGES[reason]),
                }
            )
        return response


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
        state.renew()
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


def csrf_failure(request: HttpRequest, reason: str = ""):
    """CSRF refusals as JSON for scripts, Django's page for everyone else."""
    if wants_json(request):
        return json_error(403, "csrf", "CSRF verification failed; reload the page and try again.")
    return csrf.csrf_failure(request, reason=reason)
