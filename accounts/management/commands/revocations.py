"""Show or send the sign-outs the auth backend has not received (accounts/revocations.py).

    manage.py revocations           the queue: one line per row, never a token
    manage.py revocations --due     send the rows whose next attempt is due (cron, every minute)
    manage.py revocations --flush   send every row now

Sending prints how many were delivered, failed (tried again later, with
back-off) and expired (the token's own expiry passed: nothing left to revoke).
"""

from django.core.management.base import BaseCommand
from django.utils import timezone

from accounts import revocations
from accounts.models import PendingRevocation


class Command(BaseCommand):
    help = "Show the queue of sign-outs the auth backend has not received, or send them."

    def add_arguments(self, parser):
        send = parser.add_mutually_exclusive_group()
        send.add_argument("--flush", action="store_true", help="send every queued revocation now")
        send.add_argument(
            "--due", action="store_true", help="send the revocations whose next attempt is due"
        )

    def handle(self, *args, flush: bool, due: bool, **options):
        if flush or due:
            counts = revocations.retry(due_only=due, stop_when_down=due)
            line = f"delivered {counts.delivered}, failed {counts.failed}, expired {counts.expired}"
            if counts.unreadable:
                line += f", unreadable {counts.unreadable} (SECRET_KEY changed)"
            if counts.skipped:
                line += f", left for later {counts.skipped}"
            self.stdout.write(line)
            return
        self.show()

    def show(self) -> None:
        now = timezone.now()
        rows = PendingRevocation.objects.order_by("next_attempt_at", "pk")
        total = rows.count()
        due = rows.filter(next_attempt_at__lte=now).count()
        self.stdout.write(f"{total} pending revocation{'' if total == 1 else 's'}, {due} due")
        for row in rows.defer("sealed"):
            self.stdout.write(
                f"#{row.pk} backend user {row.backend_user_id or '?'}: "
                f"queued {_when(row.queued_at)}, attempts {row.attempts}, "
                f"next {_when(row.next_attempt_at)}, expires {_when(row.expires_at)}, "
                f"last error: {row.last_error or '-'}"
            )


def _when(value) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")
