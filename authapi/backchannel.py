"""Tell the web app an account's sign-ins are over: its back-channel sign-out.

`manage.py apiuser disable|revoke` calls `send_logout()` once its change is
committed, when AUTHAPI_BACKCHANNEL_URL is set: a logout token (HS256 under
AUTHAPI_BACKCHANNEL_SECRET; `sub` the account's id as in the access tokens,
`iat`, a random `jti`, no `sid`: every sign-in) POSTed form-encoded as
`logout_token`, the way OpenID Connect Back-Channel Logout 1.0 sends it. The
app deletes that user's sessions within the request and answers how many
(accounts/usersessions/backchannel.py). A failure never raises: it comes back as a
`Delivery` saying why.
"""

import secrets
from dataclasses import dataclass

import jwt
import requests

from .conf import JWT_ALGORITHM
from .tokens import now

TIMEOUT = 5.0


@dataclass(frozen=True)
class Delivery:
    """What came of one back-channel sign-out: sessions `ended` if confirmed, else the problem."""

    confirmed: bool
    ended: int = 0
    problem: str = ""

    def describe(self) -> str:
        """Return the one line `apiuser` prints."""
        if self.confirmed:
            plural = "" if self.ended == 1 else "s"
            return f"Back-channel sign-out: the app ended {self.ended} session{plural}"
        return f"Back-channel sign-out not confirmed: {self.problem}"


def logout_token(*, user_id: str, secret: str) -> str:
    """Return a logout token for every sign-in of backend user `user_id`."""
    claims = {"sub": user_id, "iat": int(now()), "jti": secrets.token_urlsafe(16)}
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM)


def send_logout(*, user_id: str, url: str, secret: str, timeout: float = TIMEOUT) -> Delivery:
    """POST a logout token for `user_id` to the app at `url`; return what came of it."""
    data = {"logout_token": logout_token(user_id=user_id, secret=secret)}
    try:
        response = requests.post(url, data=data, timeout=timeout, allow_redirects=False)
    except requests.Timeout:
        return Delivery(False, problem=f"the app did not answer within {timeout:g} s ({url})")
    except requests.RequestException as exc:
        problem = f"the app could not be reached ({url}): {type(exc).__name__}"
        return Delivery(False, problem=problem)
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code == 200 and isinstance(body, dict) and body.get("ok") is True:
        ended = body.get("ended")
        return Delivery(True, ended=ended if isinstance(ended, int) else 0)
    reason = ""
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        reason = f": {body.get('error', 'error')}: {body['message'][:200]}"
    elif response.status_code == 404:
        reason = " (is AUTH_BACKCHANNEL_SECRET set there, and the URL right?)"
    return Delivery(False, problem=f"the app answered {response.status_code}{reason} ({url})")
