"""Storing and delivering one request's pair when its response leaves.

Where the pair goes is AUTH_TOKEN_STORAGE's choice, made per session: a
session whose pair the browser holds moves it into the session when the
setting says `session`, and the other way round, so switching the setting
signs nobody out. In cookie mode a cookie the browser would drop
(accounts/cookies.py's limit) is not lost: that session keeps its pair
server-side. The record and the sealed pair (accounts/vault.py) are saved in
the session in both modes.
"""

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from django.contrib.sessions.backends.base import SessionBase
from django.http import HttpResponseBase

from . import cookies, vault
from .conf import conf
from .cookies import BackendCookie
from .record import COOKIES, SESSION, SESSION_KEY, TokenRecord

if TYPE_CHECKING:
    from .state import TokenState

logger = logging.getLogger(__name__)


class Delivery:
    """The cookies one response sets or deletes, and the record it saves."""

    def __init__(self, state: "TokenState"):
        self.state = state
        self.outgoing: list[BackendCookie] = []  # token cookies the response sets
        self.delete_paths: tuple[str, ...] | None = None  # where it deletes them, if it does
        self.made_newest = False  # the pair is this request's own refresh: no re-read

    def signed_in(self, issued: list[BackendCookie]) -> None:
        """A new sign-in: relay what the backend issued, delete nothing."""
        self.outgoing = list(issued)
        self.delete_paths = None

    def forget(self, record: TokenRecord | None) -> None:
        """Sign-out: delete the cookies wherever they were set (and set nothing)."""
        paths = record.cookie_paths if record else ()
        self.delete_paths = tuple(paths) + tuple(
            c.path for c in self.outgoing if c.path != conf.cookie_path
        )
        self.outgoing = []

    def write(self, response: HttpResponseBase) -> None:
        """Deliver the pair where the setting wants it; write the cookies; save the record."""
        state = self.state
        if state.record is not None:
            self._deliver()
        if self.delete_paths is not None:
            cookies.delete(response, conf.token_cookies, self.delete_paths)
        cookies.write(response, self.outgoing)
        self.outgoing = []
        if state.record_changed and state.record is not None:
            self._save_record()

    def _deliver(self) -> None:
        """Send the pair where AUTH_TOKEN_STORAGE wants it: the browser's cookies or the session.

        The record says where it is now. A pair in the session moving to
        cookies is handed to the browser whole; one moving into the session
        has its cookies deleted.
        """
        state = self.state
        record = state.record
        wanted = conf.token_storage
        if wanted == COOKIES:
            if record.storage == SESSION:
                self.outgoing = cookies.merge(self._pair_cookies(), self.outgoing)
            too_large = cookies.too_large(self.outgoing)
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
            self.outgoing = []
            if any(name in state.request.COOKIES for name in conf.token_cookies):
                self.delete_paths = record.cookie_paths  # left from cookie mode
        if record.storage != wanted:
            state.set_record(replace(record, storage=wanted))

    def _pair_cookies(self) -> list[BackendCookie]:
        """The current pair as cookies that expire when the record says its tokens do."""
        state = self.state
        now = time.time()
        pair = (
            (conf.access_cookie, state.tokens.access, state.record.access_expires_at),
            (conf.refresh_cookie, state.tokens.refresh, state.record.refresh_expires_at),
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

    def _save_record(self) -> None:
        state = self.state
        session = state.request.session
        # A pair this request's own refresh call has just made is the newest
        # there is: to move further, another request would have to spend it
        # first, within these moments; were one to, the next request adopts its
        # pair through the kept outcomes (accounts/checking.py). So only other
        # changes (a collected pair, revalidation) re-read the store.
        stored = {} if self.made_newest else _stored_session(session)
        record = TokenRecord.from_session_value(stored.get(SESSION_KEY))
        if (
            record is not None
            and record.binding == state.record.binding
            and record.generation > state.record.generation
        ):
            # A concurrent request of this session moved on further; keep its pair.
            session[SESSION_KEY] = record.as_session_value()
            session[vault.SESSION_KEY] = stored.get(vault.SESSION_KEY)
            return
        session[SESSION_KEY] = state.record.as_session_value()
        session[vault.SESSION_KEY] = vault.seal(state.tokens)
        if state.record.refresh_expires_at is not None:
            # The session lives exactly as long as its refresh token.
            session.set_expiry(max(1, int(state.record.refresh_expires_at - time.time())))


def _stored_session(session: SessionBase) -> dict:
    """Return the session as the store holds it now (another request may have saved)."""
    key = session.session_key
    if not key:
        return {}
    return type(session)(session_key=key).load()
