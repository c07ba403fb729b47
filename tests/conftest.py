import pytest
from django.core.management import call_command
from django.test import Client


@pytest.fixture
def api_client(settings, db):
    """A Django test client that speaks to the reference API as its own server does.

    Same URLconf, no middleware (see authapi/server.py), demo users seeded.
    """
    settings.ROOT_URLCONF = "authapi.urls"
    settings.MIDDLEWARE = []
    call_command("seed_demo_users", quiet=True)
    return Client()
