import re
import sys

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.core.servers.basehttp import run

from authapi.conf import api_settings
from authapi.server import AuthApiHandler, AuthApiServer

DEFAULT_ADDR = "127.0.0.1"
DEFAULT_PORT = 8001
ADDRPORT = re.compile(r"^(?:(?P<addr>[\w.:-]+|\[[0-9a-fA-F:]+\]):)?(?P<port>\d+)$")


class Command(BaseCommand):
    help = (
        "Serve the reference auth API (its URLs only, no app middleware) on "
        f"[addr:]port, default {DEFAULT_ADDR}:{DEFAULT_PORT}. Port 0 picks a free port "
        "and prints it."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default=f"{DEFAULT_ADDR}:{DEFAULT_PORT}")

    def handle(self, *args, addrport, **options):
        match = ADDRPORT.match(addrport)
        if match is None:
            raise CommandError(f'"{addrport}" is not a port number or address:port pair.')
        addr = (match["addr"] or DEFAULT_ADDR).strip("[]")
        port = int(match["port"])
        try:
            api_settings.jwt_secret  # noqa: B018 - fail now, not at the first login
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc

        def on_bind(bound_port):
            self.stdout.write(f"Reference auth API listening on http://{addr}:{bound_port}/")
            self.stdout.write(
                f"  access TTL {api_settings.access_ttl}s, refresh TTL {api_settings.refresh_ttl}s"
            )
            self.stdout.flush()

        try:
            run(
                addr,
                port,
                AuthApiHandler(),
                ipv6=":" in addr,
                threading=True,
                on_bind=on_bind,
                server_cls=AuthApiServer,
            )
        except OSError as exc:
            raise CommandError(f"Cannot listen on {addr}:{port}: {exc.strerror}") from exc
        except KeyboardInterrupt:
            sys.exit(0)
