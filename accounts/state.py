"""`TokenState`: one request's whole token state, in one object.

It holds the pair that came in (the token cookies, values outside RFC 6265's
cookie-octets counting as absent; or, for a sign-in whose pair is kept in the
session, that pair: accounts/vault.py), the session's `TokenRecord`, the
current pair, and the cookies to send back. The middleware creates it
(`request.token_state`), asks it to `check()` the cookies against the record,
to refresh and to revalidate, and lets it `finish()` the response. The backend
client takes it as its TokenSource, so a 401 anywhere renews and replays.
Nothing else reads token cookies or keeps tokens on the request.

Where the pair goes when the response leaves is AUTH_TOKEN_STORAGE's choice,
made per session in `finish()`: a session whose pair the browser holds moves
it into the session when the setting says `session`, and the other way round,
so switching the setting signs nobody out.
"""

import contextlib
import functools
import logging
import time
from dataclasses import replace

from django.contrib.auth import BACKEND_SESSION_KEY
from django.contrib.sessions.backends.base import SessionBase
from django.http import HttpRequest, HttpResponseBase
from django.utils.module_loading import import_string

from . import cookies, metrics, refresh, shape, vault
from .client import Tokens, get_client, usable_token
from .conf import conf
from .cookies import BackendCookie
from .exceptions import BackendError, RefreshPending, SessionEnded, TokensRefused
from .models import User, UserProfile
from .reasons import Reason
from .record import (
    COOKIES,
    SESSION,
    SESSION_KEY,
    TokenRecord,
    access_expiry,
    hash_matches,
    token_hash,
)
from .signout import end_session
from .slots import Slots

logger = logging.getLogger(__name__)

REQUEST_ATTR = "token_state"
# At most half of a process's threads wait for refreshes at once (accounts/slots.py):
# with a slow backend the rest answer 503 at once and pages find a thread.
_refresh_waiters = Slots("requests waiting for a refresh", "SERVER_THREADS / 2")
# Refresh outcomes followed in one go: a late tab, or a result nobody
# collected while its successor expired too.
MAX_CHAIN = 4
REVALIDATE_RETRY = 30
# Seconds before its expiry an issued access token counts as expired already.
EXPIRY_MARGIN = 1.0
# The browser's refresh renews a pair younger than this only when it is due.
BROWSER_REFRESH_MIN_AGE = 30


def _signed_in_here(request: HttpRequest) -> bool:
    """Return whether the session was signed in through the auth API backend.

    Sessions of other backends (a local `createsuperuser` account through
    ModelBackend) are none of the token middleware's business.
    """
    return _is_token_backend(request.session.get(BACKEND_SESSION_KEY) or "")


@functools.lru_cache(maxsize=16)
def _is_token_backend(path: str) -> bool:
    from .backends import AuthApiBackend

    try:
        return bool(path) and issubclass(import_string(path), AuthApiBackend)
    except ImportError:
        return False


class TokenState:
    """The tokens of one request: in, recorded, current, out."""

    def __init__(self, request: HttpRequest):
        self.request = request
        self.from_cookies = Tokens(
            access=usable_token(request.COOKIES.get(conf.access_cookie)),
            refresh=usable_token(request.COOKIES.get(conf.refresh_cookie)),
        )
        self._tokens: Tokens | None = None
        self.record: TokenRecord | None = None
        self._loaded = False
        self._record_changed = False
        self._outgoing: list[BackendCookie] = []
        self._delete_paths: tuple[str, ...] | None = None
        self.renewed = False
        self._failure: BackendError | None = None
        self._background = False
        self._deadline: float | None = None
        self._made_newest = False
        self._claims: dict[str, refresh.Claim] = {}

    @classmethod
    def of(cls, request: HttpRequest) -> "TokenState":
        """Return the request's TokenState, creating it if the middleware has not."""
        state = getattr(request, REQUEST_ATTR, None)
        if state is None:
            state = cls(request)
            setattr(request, REQUEST_ATTR, state)
        return state

    @functools.cached_property
    def incoming(self) -> Tokens:
        """The pair this request came with: its token cookies, or the session's own pair
        when the session keeps it (its record says so)."""
        record = self.load()
        if record is not None and record.storage == SESSION:
            return vault.tokens_of(self.request.session) or Tokens()
        return self.from_cookies

    @property
    def tokens(self) -> Tokens:
        """The current pair: what came in until a refresh, sign-in or sign-out replaced it."""
        return self.incoming if self._tokens is None else self._tokens

    @tokens.setter
    def tokens(self, value: Tokens) -> None:
        self._tokens = value

    # --- who is this --------------------------------------------------------

    def applies(self) -> bool:
        """Return whether this request belongs to a sign-in through the auth API."""
        user = getattr(self.request, "user", None)
        return bool(user is not None and user.is_authenticated and _signed_in_here(self.request))

    def load(self) -> TokenRecord | None:
        if not self._loaded:
            self.record = TokenRecord.from_session_value(self.request.session.get(SESSION_KEY))
            self._loaded = True
        return self.record

    # --- sign-in and sign-out -----------------------------------------------

    def signed_in(self, profile: UserProfile, issued: list[BackendCookie]) -> None:
        """Keep a new sign-in's pair: recorded and relayed when the response goes out."""
        tokens = Tokens().updated_by(issued)
        self.tokens = tokens
        self.record = TokenRecord.issue(
            user_id=profile.id,
            access=tokens.access,
            refresh=tokens.refresh or "",
            cookies=issued,
            storage=conf.token_storage,
        )
        self._loaded = self._record_changed = True
        self._outgoing = list(issued)
        self._delete_paths = None

    def forget(self) -> None:
        """Drop the tokens: the response deletes the cookies wherever they were set."""
        record = self.load()
        paths = record.cookie_paths if record else ()
        self._delete_paths = tuple(paths) + tuple(
            c.path for c in self._outgoing if c.path != conf.cookie_path
        )
        self.tokens = Tokens()
        self.record = None
        self._loaded = True
        self._record_changed = False
        self._outgoing = []

    def end(self, reason: Reason) -> None:
        """End the session for `reason` and raise SessionEnded."""
        end_session(self.request, reason)
        raise SessionEnded(reason)

    # --- invariant 2: the session decides -----------------------------------

    def check(self) -> None:
        """Accept the request's cookies only as the session's own pair (or an older one).

        :raises SessionEnded: no record, no or half a pair, or cookies that are
            not this session's (forged, garbage, another user's).
        """
        record = self.load()
        if record is None:
            self.end(Reason.NO_RECORD)
        incoming = self.incoming
        if not incoming.access and not incoming.refresh:
            self.end(Reason.NO_TOKENS)
        if not incoming.refresh:
            self.end(Reason.HALF_PAIR)
        if hash_matches(incoming.refresh, record.refresh_hash):
            if incoming.access and hash_matches(incoming.access, record.access_hash):
                return
            # An older access cookie, or none (the browser let it expire): with a
            # backend that keeps its refresh token, another tab may have renewed
            # the access token already; else a missing one is refreshed.
            if not self._catch_up_same_refresh(record) and incoming.access:
                self.end(Reason.FOREIGN_COOKIES)
            return
        if self._catch_up_late_tab(record) or self._adopt_newer_cookies(record):
            return
        self.end(Reason.FOREIGN_COOKIES)

    def _presented_replaced(self, found: refresh.Outcome) -> bool:
        """Return whether the incoming access cookie is the one that refresh replaced (or none)."""
        return not self.incoming.access or hash_matches(self.incoming.access, found.replaced_access)

    def _catch_up_same_refresh(self, record: TokenRecord) -> bool:
        """With a backend that keeps the refresh token, a late tab has the current refresh
        token and an older access token: hand it the access token of the last round."""
        if not record.round:
            return False
        found = refresh.peek(self.incoming.refresh, binding=record.binding, round_=record.round - 1)
        if found is None or found.state != refresh.OK or not self._presented_replaced(found):
            return False
        access = found.tokens.access
        if not hash_matches(access, record.access_hash):
            return False
        self.tokens = Tokens(access=access, refresh=self.incoming.refresh)
        self._outgoing = [c for c in found.cookies if c.name == conf.access_cookie]
        metrics.refresh_served("shared", 0.0)  # another request's refresh, kept
        return True

    def _catch_up_late_tab(self, record: TokenRecord) -> bool:
        """An older pair of this session (sent before the new cookies landed): move it on."""
        token, round_ = self.incoming.refresh, 0
        gathered: dict[str, BackendCookie] = {}
        for _ in range(MAX_CHAIN):
            found = refresh.peek(token, binding=record.binding, round_=round_)
            if found is None or found.state != refresh.OK:
                return False
            if not gathered and not self._presented_replaced(found):
                return False
            gathered.update({c.name: c for c in found.cookies})
            token, round_ = refresh.following(token, round_, found.tokens.refresh)
            if hash_matches(token, record.refresh_hash) and round_ == record.round:
                pair = Tokens().updated_by(list(gathered.values()))
                if not hash_matches(pair.access, record.access_hash):
                    return False
                logger.debug("An older pair of this session; sending it the current one")
                self.tokens = Tokens(access=pair.access, refresh=token)
                self._outgoing = list(gathered.values())
                metrics.refresh_served("shared", 0.0)  # another request's refresh, kept
                return True
        return False

    def _adopt_newer_cookies(self, record: TokenRecord) -> bool:
        """Cookies newer than the record (a concurrent request's save was lost): adopt them."""
        refresh_hash, round_ = record.refresh_hash, record.round
        target = token_hash(self.incoming.refresh)
        for _ in range(MAX_CHAIN):
            step = refresh.successor(refresh_hash, round_, record.binding)
            if step is None:
                return False
            access_hash, refresh_hash, round_ = step
            if refresh_hash == target:
                if self.incoming.access and not hash_matches(self.incoming.access, access_hash):
                    return False
                self._set_record(
                    record.renewed(
                        access=self.incoming.access,
                        refresh=self.incoming.refresh,
                        cookies=[],
                        round_=round_,
                    )
                )
                return True
        return False

    # --- refresh --------------------------------------------------------------

    def refresh_if_due(self) -> None:
        """Start the refresh when the recorded expiry says so (or the access token is
        missing); never wait for it here.

        A request that needs the new token waits for it at its first backend call
        (`tokens_for_call`); a view that makes none is served from the session,
        and `finish()` hands the new pair to the browser if it is ready by then,
        else the next request collects it. So a slow refresh holds up only what
        needs the backend.

        :raises SessionEnded: the refresh was refused or its outcome is unknown
            (known already: another request's call answered).
        """
        if self.tokens.access and not self._due(time.time()):
            return
        self._background = True
        with contextlib.suppress(RefreshPending):
            self.renew(wait=False)

    def _due(self, now: float) -> bool:
        return self.load().refresh_due(now=now, leeway=conf.refresh_leeway)

    @property
    def refresh_pending(self) -> bool:
        """Whether this request started (or joined) a refresh it has not collected yet."""
        return self._background and not self.renewed and self._failure is None

    def renew_for_browser(self) -> Tokens:
        """The browser's own refresh (`POST /accounts/refresh/`): renew when due, or when
        the pair is at least BROWSER_REFRESH_MIN_AGE seconds old; else keep it.

        Scripts may call it as often as they like; the backend sees at most one
        refresh per session in that time, and the cache keeps one outcome for it.
        """
        record = self.load()
        now = time.time()
        young = now - record.renewed_at < BROWSER_REFRESH_MIN_AGE
        if young and self.tokens.access and not self._due(now):
            return self.tokens
        return self.renew()

    def renew(self, *, wait: bool = True) -> Tokens:
        """Move on to the next pair, once per request; return the current tokens.

        :raises SessionEnded: refused, unknown outcome, or a spent token of another session.
        :raises RefreshPending: the wait budget (one per request) is spent.
        """
        if self.renewed:
            return self.tokens
        if self._failure is not None:
            raise self._failure  # one attempt per request
        record = self.load()
        deadline = self._wait_deadline() if wait else None
        token, round_ = self.tokens.refresh, record.round
        gathered: dict[str, BackendCookie] = {}
        found = None
        next_round = 0
        replaced = record.access_hash
        for _ in range(MAX_CHAIN):
            try:
                found = self._outcome(token, round_, replaced, deadline)
            except RefreshPending:
                raise
            except BackendError as exc:
                self._failure = exc
                raise
            if found.state == refresh.OK:
                gathered.update({c.name: c for c in found.cookies})
                newer = found.tokens
                next_token, next_round = refresh.following(token, round_, newer.refresh)
                access_cookie = gathered.get(conf.access_cookie)
                if access_cookie is None or not _expired(access_cookie, newer.access):
                    break
                # A pair nobody collected in time: renew its successor, never the spent token.
                token, round_ = next_token, next_round
                replaced = token_hash(newer.access) if newer.access else None
                continue
            reason = {refresh.REFUSED: Reason.REFUSED, refresh.FOREIGN: Reason.FOREIGN_COOKIES}
            self.end(reason.get(found.state, Reason.UNKNOWN_OUTCOME))
        else:
            raise RefreshPending("too many refreshes in a row; try again")
        self._adopt(list(gathered.values()), found.profile, round_=next_round)
        self._made_newest = found.own
        return self.tokens

    def _outcome(
        self, token: str, round_: int, replaced: str | None, deadline: float | None
    ) -> refresh.Outcome:
        """One round's outcome: looked up (or started) at once; waited for, within the
        deadline, only if it is still running and this process has a waiting slot free."""
        record = self.record
        ask = functools.partial(
            refresh.outcome,
            token,
            binding=record.binding,
            round_=round_,
            keep_for=record.keep_outcome_for(),
            replaced_access=replaced,
            claims=self._claims,
        )
        if deadline is None:
            return ask(deadline=None)
        try:
            return ask(deadline=None)  # known already: no slot taken
        except RefreshPending:
            with _refresh_waiters.hold(limit=conf.refresh_waiters):
                return ask(deadline=deadline)

    def _wait_deadline(self) -> float:
        # One budget per request, however many waits it takes.
        if self._deadline is None:
            self._deadline = time.monotonic() + conf.refresh_wait
        return self._deadline

    def _adopt(
        self, issued: list[BackendCookie], profile: UserProfile | None, *, round_: int
    ) -> None:
        tokens = self.tokens.updated_by(issued)
        self.tokens = tokens
        self.renewed = True
        self._outgoing = _merge(self._outgoing, issued)
        self._set_record(
            self.record.renewed(
                access=tokens.access, refresh=tokens.refresh, cookies=issued, round_=round_
            )
        )
        if profile is None:
            try:
                profile = self._profile_after_refresh()
            except BackendError as exc:
                shape.report(exc)
                logger.info("Profile not re-read after refresh (%s); keeping the session", exc)
                return
        self.apply_profile(profile)

    def _profile_after_refresh(self) -> UserProfile:
        """The user after a refresh: from `/users/me`, or with AUTH_ROLES_FROM=token, the
        mirrored user with the roles the new access token carries (no backend call)."""
        if conf.roles_from != "token":
            return self._read_user()
        user = self.request.user
        return UserProfile(
            id=self.record.user_id,
            email=user.email,
            first_name=user.first_name,
            last_name=user.last_name,
            roles=get_client().token_roles(self.tokens.access),
        )

    # --- revalidation ---------------------------------------------------------

    def revalidate_if_due(self) -> None:
        """Re-read the user from the backend every AUTH_REVALIDATE_INTERVAL seconds."""
        record = self.load()
        if time.time() - record.validated_at < conf.revalidate_interval:
            return
        if self.refresh_pending:
            return  # the refresh re-reads the user when it lands; no wait for it here
        try:
            profile = self._read_user()
        except BackendError as exc:
            shape.report(exc)
            logger.warning("User not re-read (%s); trying again in %ss", exc, REVALIDATE_RETRY)
            retry_at = time.time() - conf.revalidate_interval + REVALIDATE_RETRY
            self._set_record(replace(self.record, validated_at=retry_at))
            return
        self.apply_profile(profile)

    def _read_user(self) -> UserProfile:
        """`/users/me` with this state's tokens; the backend refusing them ends the session."""
        try:
            return get_client().me(self)
        except TokensRefused as exc:
            self.end(exc.reason)

    def apply_profile(self, profile: UserProfile) -> None:
        """Update the user from a fresh profile; end the session if it is not theirs any more."""
        from .backends import roles_allowed

        if profile.id != self.record.user_id:
            self.end(Reason.OTHER_USER)
        if not roles_allowed(profile.roles):
            self.end(Reason.LOST_ROLE)
        self.request.user = User.objects.sync_from_profile(profile, current=self.request.user)
        self._set_record(replace(self.record, validated_at=time.time()))

    # --- TokenSource, for the backend client ------------------------------------

    def tokens_for_call(self) -> Tokens:
        """Return tokens fit for a backend call, waiting (within budget) if they have expired."""
        record = self.load()
        if record is not None and (
            record.access_expired(now=time.time()) or not self.tokens.access
        ):
            return self.renew()
        return self.tokens

    def renew_after_rejection(self) -> Tokens:
        """The backend said 401: renew once per request; a second time ends the session."""
        if self.renewed:
            self.end(Reason.REJECTED_TWICE)
        if self.load() is None:
            self.end(Reason.NO_RECORD)
        return self.renew()

    # --- the response ---------------------------------------------------------

    def finish(self, response: HttpResponseBase) -> None:
        """Collect a background refresh if it is done; deliver the pair; save the record."""
        if self._background and not self.renewed and self.record is not None:
            try:
                self.renew(wait=False)
            except RefreshPending:
                pass  # the next request collects it
            except (SessionEnded, BackendError):
                pass  # the next request meets the same outcome and answers for it
        if self.record is not None:
            self._deliver()
        if self._delete_paths is not None:
            cookies.delete(response, conf.token_cookies, self._delete_paths)
        cookies.write(response, self._outgoing)
        self._outgoing = []
        if self._record_changed and self.record is not None:
            self._save_record()

    def _deliver(self) -> None:
        """Send the pair where AUTH_TOKEN_STORAGE wants it: the browser's cookies or the session.

        The record says where it is now. A pair in the session moving to
        cookies is handed to the browser whole; one moving into the session
        has its cookies deleted. In cookie mode a cookie the browser would
        drop (accounts/cookies.py's limit) is not lost: that session keeps
        its pair server-side, and the log says why.
        """
        record = self.record
        wanted = conf.token_storage
        if wanted == COOKIES:
            if record.storage == SESSION:
                self._outgoing = _merge(self._pair_cookies(), self._outgoing)
            too_large = cookies.too_large(self._outgoing)
            for name, size in too_large if record.storage == COOKIES else ():
                logger.warning(
                    "The %s cookie would be %s bytes with its attributes; browsers drop cookies "
                    "over %s bytes, so this session keeps its tokens on the server. Set "
                    "AUTH_TOKEN_STORAGE=session to keep every session's tokens there.",
                    name,
                    size,
                    cookies.BROWSER_LIMIT,
                )
            if too_large:
                wanted = SESSION
        if wanted == SESSION:
            self._outgoing = []
            if any(name in self.request.COOKIES for name in conf.token_cookies):
                self._delete_paths = record.cookie_paths  # left from cookie mode
        if record.storage != wanted:
            self._set_record(replace(record, storage=wanted))

    def _pair_cookies(self) -> list[BackendCookie]:
        """The current pair as cookies that expire when the record says its tokens do."""
        now = time.time()
        pair = (
            (conf.access_cookie, self.tokens.access, self.record.access_expires_at),
            (conf.refresh_cookie, self.tokens.refresh, self.record.refresh_expires_at),
        )
        return [
            BackendCookie(
                name=name,
                value=value,
                max_age=None if expires is None else max(1, int(expires - now)),
            )
            for name, value, expires in pair
            if value
        ]

    def _set_record(self, record: TokenRecord) -> None:
        self.record = record
        self._record_changed = True

    def _save_record(self) -> None:
        session = self.request.session
        # A pair this request's own refresh call has just made is the newest
        # there is: to move further, another request would have to spend it
        # first, within these moments; were one to, the next request adopts its
        # pair through the kept outcomes (`_adopt_newer_cookies`). So only
        # other changes (a collected pair, revalidation) re-read the store.
        stored = {} if self._made_newest else _stored_session(session)
        record = TokenRecord.from_session_value(stored.get(SESSION_KEY))
        if (
            record is not None
            and record.binding == self.record.binding
            and record.generation > self.record.generation
        ):
            # A concurrent request of this session moved on further; keep its pair.
            session[SESSION_KEY] = record.as_session_value()
            session[vault.SESSION_KEY] = stored.get(vault.SESSION_KEY)
            return
        session[SESSION_KEY] = self.record.as_session_value()
        session[vault.SESSION_KEY] = vault.seal(self.tokens)
        if self.record.refresh_expires_at is not None:
            # The session lives exactly as long as its refresh token.
            session.set_expiry(max(1, int(self.record.refresh_expires_at - time.time())))


def _stored_session(session: SessionBase) -> dict:
    """Return the session as the store holds it now (another request may have saved)."""
    key = session.session_key
    if not key:
        return {}
    return type(session)(session_key=key).load()


def _expired(cookie: BackendCookie, token: str | None) -> bool:
    """Return whether an issued access token is (all but) expired: not worth handing out."""
    expiry = access_expiry(cookie, token)
    return expiry is not None and expiry <= time.time() + EXPIRY_MARGIN


def _merge(first: list[BackendCookie], later: list[BackendCookie]) -> list[BackendCookie]:
    """Later cookies win by name (a chained refresh may renew only the access token)."""
    merged = {c.name: c for c in first}
    merged.update({c.name: c for c in later})
    return list(merged.values())
