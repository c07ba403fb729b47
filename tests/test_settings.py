"""Settings behave as documented: production demands secrets, REDIS_URL picks the cache.

Each case imports the settings in a fresh interpreter with a controlled
environment (ENV_FILE=/dev/null so a developer's .env cannot interfere).
"""

import json
import os
import subprocess
import sys

from tests.servers import ROOT

PRINT_SETTINGS = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'debug': s.DEBUG, 'cache': s.CACHES['default']['BACKEND'], "
    "'db': s.DATABASES['default']['ENGINE'], 'secure': s.SESSION_COOKIE_SECURE, "
    "'auth_secure': s.AUTH_COOKIE_SECURE, 'api': s.API_BASEURL, "
    "'roles': s.AUTH_ALLOWED_ROLES, 'leeway': s.AUTH_REFRESH_LEEWAY, "
    "'caches': {a: c['BACKEND'] for a, c in s.CACHES.items()}, "
    "'fallback': s.CACHES['default'].get('OPTIONS', {}), 'session': s.SESSION_ENGINE}))"
)


def load_settings(module: str, **env: str) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AUTH", "DJANGO", "SECRET", "REDIS", "DATABASE", "DEBUG", "API_"))
    }
    clean.update(DJANGO_SETTINGS_MODULE=module, ENV_FILE=os.devnull, **env)
    return subprocess.run(
        [sys.executable, "-c", PRINT_SETTINGS],
        env=clean,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_production_without_secret_key_fails_at_start_with_a_clear_message():
    result = load_settings("config.settings.production")
    assert result.returncode != 0
    assert "Set the SECRET_KEY environment variable" in result.stderr


def test_production_defaults_are_safe():
    result = load_settings("config.settings.production", SECRET_KEY="x" * 60)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["debug"] is False
    assert loaded["secure"] is True
    assert loaded["auth_secure"] is True


def test_development_defaults_run_with_no_configuration():
    result = load_settings("config.settings.dev")
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["debug"] is True
    assert loaded["db"] == "django.db.backends.sqlite3"
    assert loaded["cache"] == "django.core.cache.backends.db.DatabaseCache"
    assert loaded["session"] == "accounts.sessions_raw"
    assert loaded["api"] == "http://127.0.0.1:8001"
    assert loaded["roles"] == ["admin", "evaluator"]
    assert loaded["leeway"] == 60


def test_redis_url_switches_the_cache_and_database_url_the_database():
    result = load_settings(
        "config.settings.dev",
        REDIS_URL="redis://127.0.0.1:6379/3",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/test",
        AUTH_ALLOWED_ROLES="admin,auditor",
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    # Redis first, the database cache when Redis does not answer (accounts/cache.py).
    assert loaded["caches"] == {
        "default": "accounts.cache.ResilientCache",
        "redis": "accounts.cache.RedisCache",
        "database": "django.core.cache.backends.db.DatabaseCache",
    }
    assert loaded["fallback"] == {"PRIMARY": "redis", "FALLBACK": "database"}
    # Sessions stay in the database: a cached copy would outlive a sign-out during an outage.
    assert loaded["session"] == "accounts.sessions_raw"
    assert loaded["db"] == "accounts.postgresql"
    assert loaded["roles"] == ["admin", "auditor"]


def test_env_example_names_every_auth_setting():
    from accounts.conf import SETTINGS

    example = (ROOT / ".env.example").read_text()
    missing = [s.name for s in SETTINGS if f"{s.name}=" not in example]
    assert missing == []


def test_the_token_middleware_placed_before_messages_is_a_warning(settings):
    from accounts.checks import TOKEN_MIDDLEWARE, check_middleware_order

    assert check_middleware_order() == []
    messages = "django.contrib.messages.middleware.MessageMiddleware"
    order = [m for m in settings.MIDDLEWARE if m != TOKEN_MIDDLEWARE]
    order.insert(order.index(messages), TOKEN_MIDDLEWARE)
    settings.MIDDLEWARE = order
    warnings = check_middleware_order()
    assert [w.id for w in warnings] == ["accounts.W001"]
    assert "MessageMiddleware" in warnings[0].msg


def test_conf_keeps_a_value_and_sees_a_changed_setting(settings):
    from accounts.conf import conf

    settings.AUTH_REFRESH_WAIT = 3
    assert conf.refresh_wait == 3
    assert conf._values["refresh_wait"] == 3, "read once, then kept"
    settings.AUTH_REFRESH_WAIT = 4.5
    assert conf.refresh_wait == 4.5
