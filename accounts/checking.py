"""Invariant 2, the session decides: is the pair a request came with this session's own?

`PairCheck.check()` accepts the incoming pair only as the session's current
pair, an older pair of the same session (a late tab: moved on to the current
one through the kept refresh outcomes), or a newer one whose descent from the
recorded pair the kept outcomes prove (a concurrent request's save was lost).
Anything else ends the session. It reads the request's `TokenState` and, when
it moves a late tab on, sets the current pair and the cookies to send back.
"""

import logging
from typing import TYPE_CHECKING

from . import refresh, signals
from .conf import conf
from .cookies import BackendCookie
from .reasons import Reason
from .record import TokenRecord, hash_matches, token_hash
from .tokens import Tokens

if TYPE_CHECKING:
    from .state import TokenState

logger = logging.getLogger(__name__)

# Refresh outcomes followed in one go: a late tab, or a result nobody
# collected while its successor expired too.
MAX_CHAIN = 4


class PairCheck:
    """Reads and checks one request's incoming pair against its session's record."""

    def __init__(self, state: "TokenState"):
        self.state = state

    @property
    def incoming(self) -> Tokens:
        return self.state.incoming

    def check(self) -> None:
        """Accept the request's pair only as the session's own (or an older one).

        :raises SessionEnded: no record, no or half a pair, or cookies that are
            not this session's (forged, garbage, another user's).
        """
        state = self.state
        record = state.load()
        if record is None:
            state.end(Reason.NO_RECORD)
        incoming = self.incoming
        if not incoming.access and not incoming.refresh:
            state.end(Reason.NO_TOKENS)
        if not incoming.refresh:
            state.end(Reason.HALF_PAIR)
        if hash_matches(incoming.refresh, record.refresh_hash):
            if incoming.access and hash_matches(incoming.access, record.access_hash):
                return
            # An older access cookie, or none (the browser let it expire): with a
            # backend that keeps its refresh token, another tab may have renewed
            # the access token already; else a missing one is refreshed.
            if not self._catch_up_same_refresh(record) and incoming.access:
                state.end(Reason.FOREIGN_COOKIES)
            return
        if self._catch_up_late_tab(record) or self._adopt_newer_cookies(record):
            return
        state.end(Reason.FOREIGN_COOKIES)

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
        self.state.tokens = Tokens(access=access, refresh=self.incoming.refresh)
        self.state.delivery.outgoing = [c for c in found.cookies if c.name == conf.access_cookie]
        signals.refresh_served("shared", 0.0)  # another request's refresh, kept
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
                self.state.tokens = Tokens(access=pair.access, refresh=token)
                self.state.delivery.outgoing = list(gathered.values())
                signals.refresh_served("shared", 0.0)  # another request's refresh, kept
                return True
        return False

    def _adopt_newer_cookies(self, record: TokenRecord) -> bool:
        """Cookies newer than the record (a concurrent request's save was lost): adopt them.

        The walk goes on past a step that issued the cookies' refresh token with
        another access token: a backend that keeps its refresh token on some
        refreshes answers with the same one in the next round too.
        """
        refresh_hash, round_ = record.refresh_hash, record.round
        target = token_hash(self.incoming.refresh)
        for _ in range(MAX_CHAIN):
            step = refresh.successor(refresh_hash, round_, record.binding)
            if step is None:
                return False
            access_hash, refresh_hash, round_ = step
            if refresh_hash == target and (
                not self.incoming.access or hash_matches(self.incoming.access, access_hash)
            ):
                self.state.set_record(
                    record.renewed(
                        access=self.incoming.access,
                        refresh=self.incoming.refresh,
                        cookies=[],
                        round_=round_,
                    )
                )
                return True
        return False
