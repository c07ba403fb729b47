"""The "Your sessions" page, and an admin's view of anyone's signed-in browsers.

A signed-in user sees each browser signed in to their account (device,
address, when it signed in, when it was last seen) and can sign any of the
others out, one by one or all at once; admins can do the same for any user.
Ending a session is accounts/usersessions/signins.py's `end()`: the session's token pair
is revoked at the backend (or queued for later when the backend cannot be
told) and the session deleted, so that browser is anonymous at its next request.
The current browser is never ended that way: it signs out through
`LogoutView`, as its own "Sign out" button does. Scripts sending
`Accept: application/json` get JSON from the POSTs instead of a redirect.
"""

import logging

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from ..conf import conf
from ..responses import json_error, wants_json
from ..roles import role_required
from ..views import LogoutView
from . import signins

logger = logging.getLogger(__name__)


@login_required
@never_cache
def sessions(request: HttpRequest) -> HttpResponse:
    """Render the signed-in user's browsers, this one marked."""
    return _render_list(request, request.user, own=True)


@login_required
@require_POST
def end(request: HttpRequest, session_id: str) -> HttpResponse:
    """End one of the user's other sessions; 404 for an id that is not theirs."""
    return _end_one(request, request.user, session_id, back=redirect("usersessions:sessions"))


@login_required
@require_POST
def end_others(request: HttpRequest) -> HttpResponse:
    """End every session of the user but this one."""
    ended = _end_all(request.user, keep=request.session.session_key)
    message = (
        ngettext(
            "Signed out %(count)d other browser.", "Signed out %(count)d other browsers.", ended
        )
        % {"count": ended}
        if ended
        else _("No other browser was signed in.")
    )
    return _done(request, message, ended=ended, back=redirect("usersessions:sessions"))


# Admins (AUTH_SUPERUSER_ROLES): anyone's sessions. The role check comes first,
# so anyone else gets the 403 page naming the role whatever the method.


@role_required(lambda: conf.superuser_roles_list)
@never_cache
def user_sessions(request: HttpRequest, user_id: int) -> HttpResponse:
    """Render any user's browsers, for an admin."""
    subject = get_object_or_404(get_user_model(), pk=user_id)
    return _render_list(request, subject, own=False)


@role_required(lambda: conf.superuser_roles_list)
@require_POST
def user_session_end(request: HttpRequest, user_id: int, session_id: str) -> HttpResponse:
    """End one session of any user, for an admin (the admin's own current one: sign-out)."""
    subject = get_object_or_404(get_user_model(), pk=user_id)
    back = redirect("usersessions:user-sessions", user_id=subject.pk)
    return _end_one(request, subject, session_id, back=back)


@role_required(lambda: conf.superuser_roles_list)
@require_POST
def user_sessions_end_all(request: HttpRequest, user_id: int) -> HttpResponse:
    """End every session of any user, for an admin; the admin's own included, last."""
    subject = get_object_or_404(get_user_model(), pk=user_id)
    current = request.session.session_key
    ended = _end_all(subject, keep=current)
    logger.info("Admin %s ended %s session(s) of user %s", request.user.pk, ended, subject.pk)
    if subject.pk == request.user.pk:
        return _sign_out_here(request)
    message = ngettext(
        "Signed %(name)s out of %(count)d browser.",
        "Signed %(name)s out of %(count)d browsers.",
        ended,
    ) % {"name": subject, "count": ended}
    back = redirect("usersessions:user-sessions", user_id=subject.pk)
    return _done(request, message, ended=ended, back=back)


# --- the work --------------------------------------------------------------------


def _render_list(request: HttpRequest, subject, *, own: bool) -> HttpResponse:
    current = request.session.session_key if subject.pk == request.user.pk else None
    context = {
        "subject": subject,
        "own": own,
        "signed_in": signins.sessions_of(subject, current_key=current),
    }
    return render(request, "usersessions/sessions.html", context)


def _end_one(request: HttpRequest, subject, session_id: str, *, back) -> HttpResponse:
    row = signins.find(subject, session_id)
    if row is None:
        if wants_json(request):
            return json_error(404, "not_found", "No such session.")
        raise Http404("No such session.")
    if row.session_key == request.session.session_key:
        return _sign_out_here(request)
    device = row.device or _("Unknown device")
    ended = int(signins.end(row.session_key))
    if subject.pk != request.user.pk:
        logger.info("Admin %s ended a session of user %s", request.user.pk, subject.pk)
    return _done(request, _("Signed out %(device)s.") % {"device": device}, ended=ended, back=back)


def _end_all(subject, *, keep: str | None) -> int:
    """End every unexpired session of `subject` but `keep`; return how many ended."""
    return signins.end_many(signins.keys_of(subject, keep=keep))


def _sign_out_here(request: HttpRequest) -> HttpResponse:
    # This browser's own session: exactly what its "Sign out" button does
    # (revoke with the request's own tokens, queue on failure, end_session).
    return LogoutView.as_view()(request)


def _done(request: HttpRequest, message: str, *, ended: int, back) -> HttpResponse:
    if wants_json(request):
        return JsonResponse({"ok": True, "ended": ended, "message": message})
    messages.success(request, message)
    return back
