"""The one place a session ends: `end_session(request, reason)`.

Everything that signs a user out (the sign-out button, a refused refresh,
foreign cookies, a lost role, a refresh whose outcome cannot be known) calls
it, and it does everything that goes with it: Django's `logout()` (flush, new
session key), the token cookies deleted at every path they may have been set
at, one log line naming the reason (never a value), and a message for the
next page where the user deserves to know why.
"""

import logging

from django.contrib import messages
from django.contrib.auth import logout
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from . import metrics

logger = logging.getLogger(__name__)

# Reasons that are not the user's own doing and get a WARNING.
SUSPICIOUS = {"foreign_cookies", "half_pair", "other_user", "no_record"}
MESSAGES = {
    "user": _("You have been signed out."),
    # The backend missed the sign-out; accounts/revocations.py tells it later.
    "revocation_queued": _(
        "Signed out here. The sign-in service could not be reached; "
        "it will be told as soon as it answers."
    ),
    "unknown_outcome": _(
        "We could not confirm your sign-in with the sign-in service, so we signed you out "
        "to keep your account safe. Please sign in again."
    ),
    "lost_role": _(
        "Your account no longer has access to this site. If you think it should, ask the "
        "site's administrator to give it one of the roles that do."
    ),
    "refused": _("Your session has ended; please sign in again."),
    "rejected_twice": _("Your session has ended; please sign in again."),
    # The browser no longer holds the pair the session was signed in with: it
    # dropped the cookies (expired, cleared) or sent others. What looks like
    # an attack to the log is, to the person, a session that ended; the page
    # says no more than that.
    "no_tokens": _("Your session has ended; please sign in again."),
    "half_pair": _("Your session has ended; please sign in again."),
    "foreign_cookies": _("Your session has ended; please sign in again."),
    "no_record": _("Your session has ended; please sign in again."),
    "other_user": _("Your session has ended; please sign in again."),
    # Sign-out while the database did not answer (accounts/views.py LogoutView).
    "revocation_lost": _(
        "Signed out in this browser. The site's database and the sign-in service did not "
        "answer, so the sign-in could not be ended there yet: when the site is back, sign in "
        "and sign out this browser's old session under “Your sessions”."
    ),
}


def end_session(request: HttpRequest, reason: str) -> None:
    """Sign the request's user out for `reason`; the response drops the token cookies."""
    from .state import TokenState  # state imports this module

    user_id = getattr(getattr(request, "user", None), "backend_id", None)
    log = logger.warning if reason in SUSPICIOUS else logger.info
    log("Session of backend user %s ended: %s", user_id, reason)
    metrics.sign_out(reason)
    TokenState.of(request).forget()
    logout(request)
    text = MESSAGES.get(reason)
    if text is not None:
        messages.add_message(request, messages.INFO, text, fail_silently=True)
