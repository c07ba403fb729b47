#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    if sys.argv[1:2] in (["runauthapi"], ["seed_demo_users"], ["apiuser"]):
        # The reference API's own commands install it, whatever the settings
        # (config/settings/base.py keeps it out of production otherwise).
        os.environ.setdefault("AUTHAPI_ENABLED", "1")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
