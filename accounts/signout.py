"""The one place a session ends: `end_session(request, reason)`.

Everything that signs a user out (the sign-out button, a refused refresh,
foreign cookies, a lost role, a refresh whose outcome cannot be known) calls
it, and it does everything that goes with it: Django's `logout()` (flush, new
session key), the token cookies deleted at every path they may have been set
at, one log line naming the reason (never a value), and a message for the
next page where the user deserves to know why (the reasons and their
sentences: accounts/reasons.py).
"""

import logging

from django.contrib import messages
from django.contrib.auth import logout
from django.http import HttpRequest

from . import signals, users
from .reasons import Reason

logger = logging.getLogger(__name__)


def end_session(request: HttpRequest, reason: Reason) -> None:
    """Sign the request's user out for `reason`; the response drops the token cookies.

    The request's token state (`request.token_state`, which accounts/state.py's
    `TokenState.of` sets and every caller has made by now) forgets the pair, so
    the response deletes the cookies wherever they were set.
    """
    user_id = users.backend_id_of(getattr(request, "user", None))
    log = logger.warning if reason.suspicious else logger.info
    log("Session of backend user %s ended: %s", user_id, reason)
    signals.sign_out(reason)
    state = getattr(request, "token_state", None)
    if state is not None:
        state.forget()
    logout(request)
    if reason.message is not None:
        messages.add_message(request, messages.INFO, reason.message, fail_silently=True)
