"""Why a sign-in ended: one vocabulary for the log, the metrics, the health page
and the sentence the user reads on the next page.

`end_session` (accounts/signout.py) takes a `Reason`; the metrics and the
health page's timeline label sign-outs with its values, and every reason a
request can end with has its sentence here, so the lists cannot disagree.
"""

from enum import StrEnum

from django.utils.translation import gettext_lazy as _

_ENDED = _("Your session has ended; please sign in again.")


class Reason(StrEnum):
    # The user's own doing.
    USER = "user"  # the sign-out button; the backend revoked the pair
    REVOCATION_QUEUED = "revocation_queued"  # the backend missed it: queued (revocations.py)
    REVOCATION_LOST = "revocation_lost"  # neither the database nor the backend answered
    # The backend's answer.
    REFUSED = "refused"  # the refresh token (or `/users/me`) was refused
    REJECTED_TWICE = "rejected_twice"  # a call refused again after this request's refresh
    UNKNOWN_OUTCOME = "unknown_outcome"  # a refresh may have spent the token: no answer
    LOST_ROLE = "lost_role"  # revalidation: no allowed role any more
    OTHER_USER = "other_user"  # revalidation: the tokens are someone else's
    # What the browser sent does not match the session.
    NO_RECORD = "no_record"
    NO_TOKENS = "no_tokens"
    HALF_PAIR = "half_pair"
    FOREIGN_COOKIES = "foreign_cookies"
    # Ended for a user who is not at this browser (their next request finds no session).
    BACKCHANNEL = "backchannel"  # the backend's back-channel sign-out (backchannel.py)
    ENDED_ELSEWHERE = "ended_elsewhere"  # from the sessions page (devices.py)

    @property
    def suspicious(self) -> bool:
        """Not the user's doing and not the backend's: logged as a WARNING."""
        return self in _SUSPICIOUS

    @property
    def message(self):
        """The sentence for the next page, or None where the user is not there to read it."""
        return _MESSAGES.get(self)


_SUSPICIOUS = frozenset(
    {Reason.FOREIGN_COOKIES, Reason.HALF_PAIR, Reason.OTHER_USER, Reason.NO_RECORD}
)
_MESSAGES = {
    Reason.USER: _("You have been signed out."),
    Reason.REVOCATION_QUEUED: _(
        "Signed out here. The sign-in service could not be reached; "
        "it will be told as soon as it answers."
    ),
    Reason.REVOCATION_LOST: _(
        "Signed out in this browser. The site's database and the sign-in service did not "
        "answer, so the sign-in could not be ended there yet: when the site is back, sign in "
        "and sign out this browser's old session under “Your sessions”."
    ),
    Reason.UNKNOWN_OUTCOME: _(
        "We could not confirm your sign-in with the sign-in service, so we signed you out "
        "to keep your account safe. Please sign in again."
    ),
    Reason.LOST_ROLE: _(
        "Your account no longer has access to this site. If you think it should, ask the "
        "site's administrator to give it one of the roles that do."
    ),
    Reason.REFUSED: _ENDED,
    Reason.REJECTED_TWICE: _ENDED,
    # The browser no longer holds the pair the session was signed in with: it
    # dropped the cookies (expired, cleared) or sent others. What looks like an
    # attack to the log is, to the person, a session that ended; the page says
    # no more than that.
    Reason.NO_RECORD: _ENDED,
    Reason.NO_TOKENS: _ENDED,
    Reason.HALF_PAIR: _ENDED,
    Reason.FOREIGN_COOKIES: _ENDED,
    Reason.OTHER_USER: _ENDED,
}
