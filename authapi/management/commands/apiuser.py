"""Change an account of the reference auth API the way its admin would.

    manage.py apiuser disable EMAIL         its tokens stop working (refresh and /users/me)
    manage.py apiuser enable EMAIL          undo `disable`
    manage.py apiuser roles EMAIL ROLE,...  replace its roles ("" clears them)
    manage.py apiuser revoke EMAIL          end every sign-in (token family) it has

It writes the API's database, so a running `runauthapi` on the same database
sees the change at its next request. With AUTHAPI_BACKCHANNEL_URL set,
`disable` and `revoke` then tell the web app to end the account's sessions
(authapi/backchannel.py) and print whether it confirmed; an app that cannot
be told does not undo or fail the change.
"""

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from authapi import backchannel, tokens
from authapi.conf import api_settings
from authapi.models import ApiUser


def parse_roles(value: str) -> list[str]:
    """Split "a, b,,a" into ["a", "b"]: trimmed, no empties, no repeats, in order."""
    return list(dict.fromkeys(role.strip() for role in value.split(",") if role.strip()))


class Command(BaseCommand):
    help = (
        "Disable, enable, set the roles of, or revoke every token of an account at the "
        "reference auth API."
    )
    # Only authapi's tables are touched: do not depend on the web app's checks.
    requires_system_checks = []

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        for name, help_text in (
            ("disable", "refuse the account's sign-in, refresh and /users/me"),
            ("enable", "allow the account again"),
            ("revoke", "revoke every token family (sign-in) of the account"),
        ):
            actions.add_parser(name, help=help_text).add_argument("email")
        roles = actions.add_parser("roles", help='replace the account\'s roles ("" clears them)')
        roles.add_argument("email")
        roles.add_argument("roles", help="comma-separated, e.g. admin,evaluator")

    @transaction.atomic
    def handle(self, *args, action: str, email: str, **options):
        user = self._user(email)
        if action == "disable":
            message = self._set_active(user, active=False)
        elif action == "enable":
            message = self._set_active(user, active=True)
        elif action == "roles":
            message = self._set_roles(user, parse_roles(options["roles"]))
        else:
            count = tokens.revoke_user(user, reason="admin")
            message = f"Revoked {count} live token famil{'y' if count == 1 else 'ies'} of {user}"
        self.stdout.write(message)
        if action in ("disable", "revoke") and api_settings.backchannel_url:
            self._after_commit_sign_out(user)

    def _after_commit_sign_out(self, user: ApiUser) -> None:
        # After the commit: the app must not hear of a change that was rolled
        # back, and an app that answers slowly must not hold the row lock.
        # Nothing here can undo the change: a missing secret is reported, not raised.
        def send() -> None:
            try:
                secret = api_settings.backchannel_secret
            except ImproperlyConfigured as exc:
                delivery = backchannel.Delivery(False, problem=str(exc))
            else:
                delivery = backchannel.send_logout(
                    user_id=str(user.pk), url=api_settings.backchannel_url, secret=secret
                )
            self.stdout.write(delivery.describe())

        transaction.on_commit(send, robust=True)

    def _user(self, email: str) -> ApiUser:
        user = ApiUser.objects.select_for_update().filter(email__iexact=email.strip()).first()
        if user is None:
            raise CommandError(f'No account with email "{email}" at the reference auth API.')
        return user

    def _set_active(self, user: ApiUser, *, active: bool) -> str:
        was = user.is_active
        user.is_active = active
        user.save(update_fields=["is_active"])
        verb = "Enabled" if active else "Disabled"
        note = " (it already was)" if was == active else ""
        if not active:
            note += ": its tokens are refused until it is enabled again"
        return f"{verb} {user}{note}"

    def _set_roles(self, user: ApiUser, roles: list[str]) -> str:
        user.roles = roles
        user.save(update_fields=["roles"])
        return f"Roles of {user}: {', '.join(roles) if roles else '(none)'}"
