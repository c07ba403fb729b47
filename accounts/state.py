"""`TokenState`: one request's token state, and the three jobs done on it.

It holds the pair that came in (the token cookies, values outside RFC 6265's
cookie-octets counting as absent; or, for a sign-in whose pair is kept in the
session, that pair: accounts/vault.py), the session's `TokenRecord` and the
current pair. Three collaborators work on it, each with one job:

- `PairCheck` (accounts/checking.py): is the incoming pair this session's own?
- `Renewal` (accounts/renewal.py): refresh when due, at most once, waiting
  only where a backend call needs the token; re-read the user.
- `Delivery` (accounts/delivery.py): where the pair goes when the response
  leaves (cookies or the session), and saving the record.

The middleware creates it (`request.token_state`), asks it to `check()`, to
refresh and to revalidate, and lets it `finish()` the response. The backend
client takes it as its TokenSource, so a 401 anywhere renews and replays.
Nothing else reads token cookies or keeps tokens on the request.
"""

import functools
import logging
from typing import NoReturn

from django.contrib.auth import BACKEND_SESSION_KEY
from django.http import HttpRequest, HttpResponseBase
from django.utils.module_loading import import_string

from . import vault
from .checking import PairCheck
from .conf import conf
from .cookies import BackendCookie
from .delivery import Delivery
from .exceptions import SessionEnded
from .models import UserProfile
from .reasons import Reason
from .record import SESSION, SESSION_KEY, TokenRecord
from .renewal import Renewal
from .signout import end_session
from .tokens import Tokens, usable_token

logger = logging.getLogger(__name__)

REQUEST_ATTR = "token_state"


def _signed_in_here(request: HttpRequest) -> bool:
    """Return whether the session was signed in through the auth API backend.

    Sessions of other backends (a local `createsuperuser` account through
    ModelBackend) are none of the token middleware's business.
    """
    return _is_token_backend(request.session.get(BACKEND_SESSION_KEY))


@functools.lru_cache(maxsize=16)
def _is_token_backend(path: str | None) -> bool:
    """Whether the authentication backend at `path` signs in with the auth API's tokens
    (accounts.backends.AuthApiBackend and its subclasses say so: `keeps_api_tokens`)."""
    try:
        return bool(path) and getattr(import_string(path), "keeps_api_tokens", False) is True
    except ImportError:
        return False


class TokenState:
    """The tokens of one request: in, recorded, current; and who does what with them."""

    def __init__(self, request: HttpRequest):
        self.request = request
        self.from_cookies = Tokens(
            access=usable_token(request.COOKIES.get(conf.access_cookie)),
            refresh=usable_token(request.COOKIES.get(conf.refresh_cookie)),
        )
        self._tokens: Tokens | None = None
        self.record: TokenRecord | None = None
        self._loaded = False
        self.record_changed = False
        self.pair_check = PairCheck(self)
        self.renewal = Renewal(self)
        self.delivery = Delivery(self)

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

    def set_record(self, record: TokenRecord) -> None:
        self.record = record
        self.record_changed = True

    # --- sign-in and sign-out -----------------------------------------------

    def signed_in(self, profile: UserProfile, issued: list[BackendCookie]) -> None:
        """Keep a new sign-in's pair: recorded and relayed when the response goes out
        (where to, cookies or the session, Delivery decides as it writes the response)."""
        tokens = Tokens().updated_by(issued)
        self.tokens = tokens
        self.record = TokenRecord.issue(
            user_id=profile.id, access=tokens.access, refresh=tokens.refresh or "", cookies=issued
        )
        self._loaded = self.record_changed = True
        self.delivery.signed_in(issued)

    def forget(self) -> None:
        """Drop the tokens: the response deletes the cookies wherever they were set."""
        self.delivery.forget(self.load())
        self.tokens = Tokens()
        self.record = None
        self._loaded = True
        self.record_changed = False

    def end(self, reason: Reason) -> None:
        """End the session for `reason` and raise SessionEnded."""
        end_session(self.request, reason)
        raise SessionEnded(reason)

    # --- the jobs, as the middleware, the views and the client ask for them ------

    def check(self) -> None:
        self.pair_check.check()

    def refresh_if_due(self) -> None:
        self.renewal.refresh_if_due()

    @property
    def refresh_pending(self) -> bool:
        return self.renewal.pending

    @property
    def renewed(self) -> bool:
        return self.renewal.renewed

    def renew(self, *, wait: bool = True) -> Tokens:
        return self.renewal.renew(wait=wait)

    def renew_for_browser(self) -> Tokens:
        return self.renewal.renew_for_browser()

    def revalidate_if_due(self) -> None:
        self.renewal.revalidate_if_due()

    def apply_profile(self, profile: UserProfile) -> None:
        self.renewal.apply_profile(profile)

    # TokenSource (accounts/client.py)

    def tokens_for_call(self) -> Tokens:
        return self.renewal.tokens_for_call()

    def renew_after_rejection(self) -> Tokens:
        return self.renewal.renew_after_rejection()

    def refused_after_renewal(self) -> NoReturn:
        self.renewal.refused_after_renewal()

    # --- the response ---------------------------------------------------------

    def finish(self, response: HttpResponseBase) -> None:
        """Collect a background refresh if it is done; deliver the pair; save the record."""
        self.renewal.collect()
        self.delivery.write(response)
