from django.core.management.base import BaseCommand
from django.db import transaction

from authapi.demo import DEMO_USERS
from authapi.models import ApiUser


class Command(BaseCommand):
    help = "Create or reset the reference API's demo accounts (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--quiet", action="store_true", help="Print nothing.")

    @transaction.atomic
    def handle(self, *args, quiet=False, **options):
        for demo in DEMO_USERS:
            user = ApiUser.objects.filter(email=demo.email).first() or ApiUser(email=demo.email)
            user.first_name = demo.first_name
            user.last_name = demo.last_name
            user.roles = list(demo.roles)
            user.is_active = True
            # Reset the password only when it no longer matches, so re-seeding
            # does not rehash (slow with PBKDF2) on every `make run`.
            if not user.password or not user.check_password(demo.password):
                user.set_password(demo.password)
            user.save()
        if not quiet:
            self.stdout.write("Demo accounts (reference auth API):")
            for demo in DEMO_USERS:
                roles = ",".join(demo.roles)
                self.stdout.write(f"  {demo.email:<24} {demo.password:<22} roles: {roles}")
