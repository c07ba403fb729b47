"""Back-channel sign-out: the backend ends a user's sessions here, server to server.

`POST /accounts/backchannel-logout/` takes a short-lived HS256 JWT signed with
AUTH_BACKCHANNEL_SECRET, the way OpenID Connect Back-Channel Logout 1.0 sends
its logout token: the form field `logout_token` (a JSON body
`{"logout_token": …}` is accepted too). It names the backend user (`sub`)
and, optionally, one of their sign-ins (`sid`, the access token's `sid` that
each UserSession keeps in `backend_sid`); their sessions are deleted
within the request, so each browser's next request is anonymous. Nothing is
sent back to the backend: it started this, and a call back into a busy
backend could wait on itself. A token is accepted once (`jti`, remembered in
the cache for AUTH_BACKCHANNEL_MAX_AGE + 60 s) and for AUTH_BACKCHANNEL_MAX_AGE
seconds after its `iat`. With no secret set the endpoint does not exist (404).
"""

import hashlib
import json
import logging
import math
import re
import time
from dataclasses import dataclass

import jwt
from django.core.cache import cache
from django.core.exceptions import SuspiciousOperation
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponseNotAllowed, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from jwt.exceptions import InvalidJTIError, InvalidSubjectError

from .. import users
from ..conf import conf
from ..reasons import Reason
from ..responses import json_error, json_view
from . import signins
from .models import UserSession

logger = logging.getLogger(__name__)

ALGORITHM = "HS256"
MAX_BODY = 10 * 1024
# How far the backend's clock may run ahead of this server's (`iat`) and how
# long after its `exp` a token is still taken.
CLOCK_SKEW = 30
# A replayed token is refused for as long as it could pass the `iat` check, and a minute more.
REPLAY_MARGIN = 60
REPLAY_KEY_PREFIX = "accounts:backchannel:jti:"
# OpenID Connect Back-Channel Logout 1.0, section 2.4: the event a logout token may carry.
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# A compact JWS: three base64url parts. Anything else is refused before PyJWT sees it.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_PYJWT_MESSAGES = (
    (jwt.InvalidAlgorithmError, f"the token's algorithm is not allowed (only {ALGORITHM})"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.ExpiredSignatureError, "the token has expired (exp)"),
    (jwt.ImmatureSignatureError, "the token is not valid yet (iat or nbf in the future)"),
    (InvalidSubjectError, "sub must be a non-empty string"),
    (InvalidJTIError, "jti must be a non-empty string"),
)


class InvalidLogoutToken(Exception):
    """A logout token refused; the message says why, never what the token was."""


class _BadRequest(Exception):
    """A request that carries no token to look at: its status, error code and why."""

    def __init__(self, status: int, error: str, message: str):
        super().__init__(message)
        self.status = status
        self.error = error


@dataclass(frozen=True)
class LogoutClaims:
    """What a verified logout token asks for: end `user_id`'s sessions (only `sid`'s, if set)."""

    user_id: str
    jti: str
    sid: str | None = None


def verify(token: str, *, secret: str, max_age: float, now: float | None = None) -> LogoutClaims:
    """Return the claims of a valid logout token.

    :raises InvalidLogoutToken: not a compact JWS, not HS256, a bad signature,
        a missing or malformed claim, issued too long ago or in the future,
        expired.
    """
    if not _COMPACT_JWS.fullmatch(token):
        raise InvalidLogoutToken("logout_token is not a JWT")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "iat", "jti"]},
            leeway=CLOCK_SKEW,
        )
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidLogoutToken(f"the token has no {exc.claim} claim") from exc
    except jwt.PyJWTError as exc:
        message = next((text for kind, text in _PYJWT_MESSAGES if isinstance(exc, kind)), None)
        # PyJWT's own messages name the part that is wrong, never its value.
        raise InvalidLogoutToken(message or f"the token is malformed: {exc}") from exc
    now = time.time() if now is None else now
    iat = claims["iat"]
    if not isinstance(iat, int | float) or isinstance(iat, bool) or not math.isfinite(iat):
        raise InvalidLogoutToken("iat must be a number (seconds since the epoch)")
    if iat < now - max_age:
        raise InvalidLogoutToken(
            f"the token was issued {int(now - iat)} s ago, more than the {max_age:g} s allowed "
            "(or the two clocks differ)"
        )
    user_id, jti, sid = claims["sub"], claims["jti"], claims.get("sid")
    if not isinstance(user_id, str) or not user_id:
        raise InvalidLogoutToken("sub must be a non-empty string")
    if not isinstance(jti, str) or not jti:
        raise InvalidLogoutToken("jti must be a non-empty string")
    if sid is not None:
        if isinstance(sid, bool) or not isinstance(sid, str | int) or str(sid) == "":
            raise InvalidLogoutToken("sid must be a non-empty string or an integer")
        sid = str(sid)
        if len(sid) > UserSession._meta.get_field("backend_sid").max_length:
            raise InvalidLogoutToken("sid is longer than any sign-in id kept here")
    # OIDC Back-Channel Logout §2.4: a logout token never carries a nonce (so an
    # ID token cannot pass for one), and its `events`, if any, name the logout event.
    if "nonce" in claims:
        raise InvalidLogoutToken("a logout token must not carry a nonce")
    events = claims.get("events")
    if events is not None and not (isinstance(events, dict) and LOGOUT_EVENT in events):
        raise InvalidLogoutToken(f"events does not name {LOGOUT_EVENT}")
    return LogoutClaims(user_id=user_id, jti=jti, sid=sid)


def claim_jti(jti: str, *, max_age: float) -> str | None:
    """Remember `jti` as used; return its cache key, or None if it was used already.

    `cache.add` is atomic in every backend this app runs on (Redis, the
    database cache), so of two deliveries of one token exactly one wins.
    """
    key = REPLAY_KEY_PREFIX + hashlib.sha256(jti.encode("utf-8", "surrogatepass")).hexdigest()
    if cache.add(key, 1, timeout=math.ceil(max_age) + REPLAY_MARGIN):
        return key
    return None


def end_sessions(*, user_id: str, sid: str | None = None) -> int:
    """End the sessions of backend user `user_id` (only sign-in `sid`'s); return how many.

    Nothing is revoked: the backend sent this, and knows.
    """
    rows = UserSession.objects.filter(**{f"user__{users.backend_id_field()}": user_id})
    if sid is not None:
        rows = rows.filter(backend_sid=sid)
    keys = list(rows.values_list("session_key", flat=True))
    return signins.end_many(keys, revoke=False, reason=Reason.BACKCHANNEL)


@csrf_exempt  # server to server: no browser, no cookie, nothing to forge
@json_view
@never_cache
def logout(request: HttpRequest) -> JsonResponse:
    """`POST /accounts/backchannel-logout/`: end a backend user's sessions (module docstring)."""
    secret = conf.backchannel_secret
    if not secret:
        raise Http404("Back-channel sign-out is not configured")
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    max_age = conf.backchannel_max_age
    try:
        token = _logout_token(request)
    except _BadRequest as exc:
        return json_error(exc.status, exc.error, str(exc))
    try:
        claims = verify(token, secret=secret, max_age=max_age)
    except InvalidLogoutToken as exc:
        return json_error(400, "invalid_token", str(exc))
    replay_key = claim_jti(claims.jti, max_age=max_age)
    if replay_key is None:
        return json_error(400, "invalid_token", "the token was used already (jti)")
    try:
        ended = end_sessions(user_id=claims.user_id, sid=claims.sid)
    except DatabaseError:
        cache.delete(replay_key)  # nothing was ended: the backend may send it again
        raise
    logger.info(
        "Back-channel sign-out of backend user %s%s: %s session(s) ended",
        claims.user_id[:128],
        "" if claims.sid is None else " (one sign-in)",
        ended,
    )
    return JsonResponse({"ok": True, "ended": ended})


def _logout_token(request: HttpRequest) -> str:
    """Return the request's `logout_token`, form-encoded or in a JSON body."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > MAX_BODY:
        raise _BadRequest(413, "too_large", f"the body is larger than {MAX_BODY} bytes")
    body = request.body
    if len(body) > MAX_BODY:
        raise _BadRequest(413, "too_large", f"the body is larger than {MAX_BODY} bytes")
    if not body:
        raise _BadRequest(400, "invalid_request", "logout_token is missing")
    if request.content_type == "application/x-www-form-urlencoded":
        try:
            token = request.POST.get("logout_token")
        except SuspiciousOperation:  # too many fields
            raise _BadRequest(400, "invalid_request", "the form cannot be read") from None
    elif request.content_type == "application/json":
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise _BadRequest(400, "invalid_request", "the body is not JSON") from None
        token = data.get("logout_token") if isinstance(data, dict) else None
    else:
        raise _BadRequest(
            400,
            "invalid_request",
            "send logout_token as application/x-www-form-urlencoded (or application/json)",
        )
    if not isinstance(token, str) or not token:
        raise _BadRequest(400, "invalid_request", "logout_token is missing")
    return token
