"""Refreshing one request's pair, and re-reading its user.

`Renewal` starts a refresh before the view when the record says it is due
(`refresh_if_due`, never waiting), waits for it only where a backend call
needs the token (`tokens_for_call`, within AUTH_REFRESH_WAIT and a waiting
slot), refreshes at most once per request, and collects a refresh that ended
meanwhile when the response goes out (`collect`). The single flight itself,
shared by every request of every worker, is accounts/refresh.py. It also
re-reads the user every AUTH_REVALIDATE_INTERVAL seconds and after each
refresh (`apply_profile`), and is what the backend client renews through
after a 401 (`renew_after_rejection`).
"""

import contextlib
import functools
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, NoReturn

from django.contrib import auth

from . import refresh, shape, users
from .checking import MAX_CHAIN
from .client import get_client
from .conf import conf
from .cookies import BackendCookie, merge
from .exceptions import (
    BackendError,
    BackendUnavailable,
    RefreshPending,
    SessionEnded,
    TokensRefused,
)
from .models import UserProfile
from .reasons import Reason
from .record import access_expiry, token_hash
from .rolematch import roles_allowed
from .slots import Slots
from .tokens import Tokens

if TYPE_CHECKING:
    from .state import TokenState

logger = logging.getLogger(__name__)

# At most half of a process's threads wait for refreshes at once (accounts/slots.py):
# with a slow backend the rest answer 503 at once and pages find a thread. One over
# the bound queues while a waiter is younger than 2 s: a refresh answered within that
# (on a busy host a 0.3 s one took over 1 s) costs a burst of tabs no 503.
_refresh_waiters = Slots("requests waiting for a refresh", "SERVER_THREADS / 2", wait=2.0)
REVALIDATE_RETRY = 30
# Seconds before its expiry an issued access token counts as expired already.
EXPIRY_MARGIN = 1.0
# The browser's refresh renews a pair younger than this only when it is due.
BROWSER_REFRESH_MIN_AGE = 30


class Renewal:
    """One request's refresh (at most one) and revalidation."""

    def __init__(self, state: "TokenState"):
        self.state = state
        self.renewed = False  # this request moved on to the next pair
        self._failure: BackendError | None = None  # its one attempt failed so
        self._background = False  # started before the view, not waited for
        self._deadline: float | None = None  # the request's one wait budget
        self._claims: dict[str, refresh.Claim] = {}  # refresh claims this request holds

    # --- refresh --------------------------------------------------------------

    def refresh_if_due(self) -> None:
        """Start the refresh when the recorded expiry says so (or the access token is
        missing); never wait for it here.

        A request that needs the new token waits for it at its first backend call
        (`tokens_for_call`); a view that makes none is served from the session,
        and `collect()` hands the new pair to the browser if it is ready by the
        response, else the next request collects it. So a slow refresh holds up
        only what needs the backend.

        :raises SessionEnded: the refresh was refused or its outcome is unknown
            (known already: another request's call answered).
        """
        if self.state.tokens.access and not self._due(time.time()):
            return
        self._background = True
        with contextlib.suppress(RefreshPending):
            self.renew(wait=False)

    def _due(self, now: float) -> bool:
        return self.state.load().refresh_due(now=now, leeway=conf.refresh_leeway)

    @property
    def pending(self) -> bool:
        """Whether this request started (or joined) a refresh it has not collected yet."""
        return self._background and not self.renewed and self._failure is None

    def collect(self) -> None:
        """At the response: take a refresh started before the view if it has ended."""
        if not self._background or self.renewed or self.state.record is None:
            return
        try:
            self.renew(wait=False)
        except RefreshPending:
            pass  # the next request collects it
        except (SessionEnded, BackendError):
            pass  # the next request meets the same outcome and answers for it

    def renew_for_browser(self) -> Tokens:
        """The browser's own refresh (`POST /accounts/refresh/`): renew when due, or when
        the pair is at least BROWSER_REFRESH_MIN_AGE seconds old; else keep it.

        Scripts may call it as often as they like; the backend sees at most one
        refresh per session in that time, and the cache keeps one outcome for it.
        """
        state = self.state
        record = state.load()
        now = time.time()
        young = now - record.renewed_at < BROWSER_REFRESH_MIN_AGE
        if young and state.tokens.access and not self._due(now):
            return state.tokens
        return self.renew()

    def renew(self, *, wait: bool = True) -> Tokens:
        """Move on to the next pair, once per request; return the current tokens.

        :raises SessionEnded: refused, unknown outcome, or a spent token of another session.
        :raises RefreshPending: the wait budget (one per request) is spent.
        """
        state = self.state
        if self.renewed:
            return state.tokens
        if self._failure is not None:
            raise self._failure  # one attempt per request
        record = state.load()
        deadline = self._wait_deadline() if wait else None
        token, round_ = state.tokens.refresh, record.round
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
            state.end(reason.get(found.state, Reason.UNKNOWN_OUTCOME))
        else:
            raise RefreshPending("too many refreshes in a row; try again")
        self._adopt(list(gathered.values()), found.profile, round_=next_round)
        state.delivery.made_newest = found.own
        return state.tokens

    def _outcome(
        self, token: str, round_: int, replaced: str | None, deadline: float | None
    ) -> refresh.Outcome:
        """One round's outcome: looked up (or started) at once; waited for, within the
        deadline, only if it is still running and this process has a waiting slot free."""
        record = self.state.record
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
        state = self.state
        tokens = state.tokens.updated_by(issued)
        state.tokens = tokens
        self.renewed = True
        state.delivery.outgoing = merge(state.delivery.outgoing, issued)
        state.set_record(
            state.record.renewed(
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
        state = self.state
        roles = get_client().token_roles(state.tokens.access)
        return users.profile_of(state.request.user, backend_id=state.record.user_id, roles=roles)

    # --- revalidation ---------------------------------------------------------

    def revalidate_if_due(self) -> None:
        """Re-read the user from the backend every AUTH_REVALIDATE_INTERVAL seconds."""
        state = self.state
        record = state.load()
        if time.time() - record.validated_at < conf.revalidate_interval:
            return
        if self.pending:
            return  # the refresh re-reads the user when it lands; no wait for it here
        try:
            profile = self._read_user()
        except BackendError as exc:
            shape.report(exc)
            logger.warning("User not re-read (%s); trying again in %ss", exc, REVALIDATE_RETRY)
            retry_at = time.time() - conf.revalidate_interval + REVALIDATE_RETRY
            state.set_record(replace(state.record, validated_at=retry_at))
            return
        self.apply_profile(profile)

    def _read_user(self) -> UserProfile:
        """`/users/me` with this request's tokens; the backend refusing them ends the session."""
        try:
            return get_client().me(self.state)
        except TokensRefused as exc:
            self.state.end(exc.reason)

    def apply_profile(self, profile: UserProfile) -> None:
        """Update the user from a fresh profile; end the session if it is not theirs any more."""
        state = self.state
        if profile.id != state.record.user_id:
            state.end(Reason.OTHER_USER)
        if not roles_allowed(profile.roles):
            state.end(Reason.LOST_ROLE)
        request = state.request
        # The backend that signed this session in mirrors the user (accounts/backends.py).
        backend = auth.load_backend(request.session[auth.BACKEND_SESSION_KEY])
        request.user = backend.mirror(profile, current=request.user)
        state.set_record(replace(state.record, validated_at=time.time()))

    # --- for the backend client (TokenState is its TokenSource) -----------------

    def tokens_for_call(self) -> Tokens:
        """Return tokens fit for a backend call, waiting (within budget) if they have expired."""
        state = self.state
        record = state.load()
        if record is not None and (
            record.access_expired(now=time.time()) or not state.tokens.access
        ):
            return self.renew()
        return state.tokens

    def renew_after_rejection(self) -> Tokens:
        """The backend said 401: renew once per request; a 401 after that ends the session
        (unless it came too late: `_refused_too_late`)."""
        if self.renewed:
            self._refused_too_late()
            self.state.end(Reason.REJECTED_TWICE)
        if self.state.load() is None:
            self.state.end(Reason.NO_RECORD)
        return self.renew()

    def refused_after_renewal(self) -> NoReturn:
        """The call replayed with the pair this request renewed to got a 401 too: the
        client raises `TokensRefused` and the middleware ends the session (unless the
        401 came too late: `_refused_too_late`)."""
        self._refused_too_late()
        raise TokensRefused(Reason.REJECTED_TWICE)

    def _refused_too_late(self) -> None:
        """Raise `BackendUnavailable` if the pair this request renewed to had expired, by
        its recorded expiry, by the time the 401 came.

        A backend that answers late (working through a queue after a stall)
        turns a fresh short-lived token into an expired one on the way. That is
        the backend being slow, not a sign-out: a 503, the session kept (the
        next request refreshes).
        """
        record = self.state.load()
        if record is not None and record.access_expired(now=time.time()):
            raise BackendUnavailable(
                "the backend answered 401 after the renewed access token had expired"
            )


def _expired(cookie: BackendCookie, token: str | None) -> bool:
    """Return whether an issued access token is (all but) expired: not worth handing out."""
    expiry = access_expiry(cookie, token)
    return expiry is not None and expiry <= time.time() + EXPIRY_MARGIN
