"""`manage.py authcheck`: try the auth backend the way the app will, and say what it needs.

    manage.py authcheck [--base-url URL] [--email E] [--password P] [--json] [--skip-destructive]

Prints each check (PASS / WARN / FAIL, what it saw, what to do) and the
`.env` lines for this backend; exits 1 when a check FAILs. The checks are in
accounts/ops/authcheck.py.
"""

import getpass
import sys

from django.core.management.base import BaseCommand, CommandError

from accounts.conf import conf
from accounts.ops.authcheck import AuthCheck


class Command(BaseCommand):
    help = (
        "Sign in to the auth backend with a real account and check that it fits the app: "
        "tokens, cookies, lifetimes, clock, /users/me, refresh, rotation, sign-out, a wrong "
        "password, reuse detection. Exits 1 when a check fails."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--base-url", help="the backend (default: API_BASEURL)")
        parser.add_argument("--email", help="an account of the backend (prompted if left out)")
        parser.add_argument(
            "--password",
            help="its password (prompted without echo if left out; a prompt keeps it out of "
            "your shell history)",
        )
        parser.add_argument("--json", action="store_true", help="print the result as JSON")
        parser.add_argument(
            "--skip-destructive",
            action="store_true",
            help="leave out the reuse probe (it signs in once more and gets that sign-in "
            "revoked on purpose)",
        )

    def handle(self, *args, base_url, email, password, json, skip_destructive, **options):
        base_url = base_url or conf.api_baseurl
        email = email or self._ask("Email: ", input)
        password = password or self._ask("Password: ", getpass.getpass)
        check = AuthCheck(
            base_url,
            email,
            password,
            destructive=not skip_destructive,
            announce=lambda message: self.stderr.write(message),
        )
        if not json:
            self.stderr.write(f"Checking {base_url} as {email}…")
        check.run()
        if json:
            self.stdout.write(check.as_json())
        else:
            self.stdout.write(self._table(check))
        if check.failed:
            sys.exit(1)

    def _ask(self, prompt: str, read) -> str:
        if not sys.stdin.isatty():
            raise CommandError(f"{prompt.rstrip(': ')} missing: pass it as an option.")
        value = read(prompt)
        if not value:
            raise CommandError(f"{prompt.rstrip(': ')} is required.")
        return value

    def _table(self, check: AuthCheck) -> str:
        rows = ["| check | result | what it saw | ms | what to do |", "|---|---|---|---|---|"]
        for item in check.checks:
            ms = "" if item.ms is None else f"{item.ms:.0f}"
            saw, advice = _cell(item.saw), _cell(item.advice)
            rows.append(f"| {item.name} | {item.status} | {saw} | {ms} | {advice} |")
        verdict = (
            "FAIL: fix what failed before pointing the app at this backend."
            if (check.failed)
            else "No check failed."
        )
        env = "\n".join(f"{name}={value}" for name, value in check.suggested_env().items())
        return "\n".join(rows) + f"\n\n{verdict}\n\nSettings for this backend (.env):\n\n{env}\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
