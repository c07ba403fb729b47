"""The production shape: settings pass `check --deploy`, gunicorn's config, static files."""

import os
import re
import runpy
import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.flows import ADMIN, sign_in
from tests.servers import (
    GUNICORN,
    ROOT,
    ServerProcess,
    _serve,
    manage,
    running_authapi,
    server_env,
)

PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "127.0.0.1,app.example.com",
}


GUNICORN_COMMAND = [GUNICORN, "config.wsgi", "--bind", "127.0.0.1:0", "--workers", "1"]


def serving(env: dict[str, str], log: Path):
    """Serve the app as deployed (`gunicorn config.wsgi`, one worker); yield a ServerProcess."""
    listening = r"Listening at: http://127\.0\.0\.1:(?P<port>\d+)"
    return _serve(GUNICORN_COMMAND, env, log, listening, ServerProcess)


def check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    env = server_env(tmp_path / "db.sqlite3", STATIC_ROOT=str(tmp_path / "static"), **PRODUCTION)
    manage("collectstatic", "--noinput", "-v", "0", env=env)
    result = check_deploy(env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_a_deploy_without_collectstatic_is_stopped_before_the_first_request(tmp_path):
    env = server_env(tmp_path / "db.sqlite3", STATIC_ROOT=str(tmp_path / "static"), **PRODUCTION)
    manage("migrate", "--noinput", "-v", "0", env=env)  # migrate does not need the files

    result = check_deploy(env)
    assert result.returncode != 0
    assert "accounts.E007" in result.stderr + result.stdout
    assert "collectstatic" in result.stderr + result.stdout

    gunicorn = subprocess.run(
        GUNICORN_COMMAND,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert gunicorn.returncode != 0, "gunicorn must not start serving 500s"
    assert "No static files manifest" in gunicorn.stderr
    assert "collectstatic" in gunicorn.stderr


def test_production_settings_keep_the_reference_api_out_of_the_database(tmp_path):
    database = tmp_path / "db.sqlite3"
    env = server_env(database, **PRODUCTION)
    manage("migrate", "--noinput", "-v", "0", env=env)
    tables = {row[0] for row in sqlite3.connect(database).execute("SELECT name FROM sqlite_master")}
    assert "django_cache" in tables, "migrate alone creates the cache table"
    assert "accounts_user" in tables
    assert not [t for t in tables if t.startswith("authapi_")], tables


def test_a_deploy_by_migrate_and_collectstatic_alone_signs_in(tmp_path):
    """The usual Django steps, nothing project-specific: migrate, collectstatic, gunicorn."""
    (tmp_path / "api").mkdir()
    with running_authapi(tmp_path / "api") as api:
        static_root = tmp_path / "static"
        env = server_env(
            tmp_path / "app.sqlite3",
            **{**PRODUCTION, "DJANGO_SETTINGS_MODULE": "config.settings.bench"},
            STATIC_ROOT=str(static_root),
            API_BASEURL=api.url,
        )
        manage("migrate", "--noinput", "-v", "0", env=env)
        manage("collectstatic", "--noinput", "-v", "0", env=env)
        with serving(env, tmp_path / "gunicorn.log") as app:
            browser = sign_in(app.url)
            dashboard = browser.get(f"{app.url}/dashboard/", timeout=10, allow_redirects=False)
            assert dashboard.status_code == 200
            assert ADMIN.email in dashboard.text


@pytest.fixture
def own_metrics_dir(monkeypatch, tmp_path):
    """gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR when unset; in this process it would
    stay set and turn later tests' /metrics to the multiprocess files."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))


@pytest.mark.usefixtures("own_metrics_dir")
def test_gunicorn_config_reads_the_environment(monkeypatch):
    monkeypatch.setenv("WEB_CONCURRENCY", "7")
    monkeypatch.setenv("GUNICORN_THREADS", "3")
    monkeypatch.setenv("GUNICORN_BIND", "0.0.0.0:9000")
    monkeypatch.setenv("GUNICORN_MAX_REQUESTS", "0")
    config = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert (config["workers"], config["threads"], config["worker_class"]) == (7, 3, "gthread")
    assert config["bind"] == "0.0.0.0:9000"
    assert (config["max_requests"], config["max_requests_jitter"]) == (0, 0)  # never replaced
    assert config["control_socket_disable"] is True


@pytest.mark.usefixtures("own_metrics_dir")
def test_gunicorn_config_defaults_to_loopback_and_cores(monkeypatch):
    for name in ("WEB_CONCURRENCY", "GUNICORN_THREADS", "GUNICORN_BIND", "GUNICORN_MAX_REQUESTS"):
        monkeypatch.delenv(name, raising=False)
    config = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert config["bind"] == "127.0.0.1:8000"
    assert (config["workers"], config["threads"]) == (os.cpu_count() + 1, 8)
    # Replaced rarely: each replacement boots Django again (bench/README.md, "(h) Side by side").
    assert (config["max_requests"], config["max_requests_jitter"]) == (25000, 2500)


def test_production_serves_collected_static_files_with_whitenoise(tmp_path):
    static_root = tmp_path / "static"
    env = server_env(tmp_path / "db.sqlite3", STATIC_ROOT=str(static_root), **PRODUCTION)
    manage("migrate", "--noinput", "-v", "0", env=env)
    manage("collectstatic", "--noinput", "-v", "0", env=env)
    with serving(env, tmp_path / "gunicorn.log") as app:
        https = {"X-Forwarded-Proto": "https"}
        plain = requests.get(f"{app.url}/", allow_redirects=False, timeout=10)
        assert plain.status_code == 301
        assert plain.headers["Location"].startswith("https://")

        home = requests.get(f"{app.url}/", headers=https, timeout=10)
        assert home.status_code == 200
        assert "Strict-Transport-Security" in home.headers
        stylesheet = re.search(r'href="(/static/css/site\.[0-9a-f]+\.css)"', home.text)
        assert stylesheet, "the page links the hashed, collected stylesheet"

        css = requests.get(f"{app.url}{stylesheet[1]}", headers=https, timeout=10)
        assert css.status_code == 200
        assert "max-age=315360000" in css.headers["Cache-Control"]
        assert ".site-header" in css.text


def test_make_run_points_the_app_at_the_api_wherever_it_was_put(monkeypatch):
    run_dev = runpy.run_path(str(ROOT / "scripts" / "run_dev.py"))
    monkeypatch.delenv("API_BASEURL", raising=False)
    moved = run_dev["app_environment"]("127.0.0.1:18001")
    assert moved["API_BASEURL"] == "http://127.0.0.1:18001"
    assert "API_BASEURL" not in run_dev["app_environment"]("127.0.0.1:8001"), (
        "the default address leaves a .env's API_BASEURL in charge"
    )
    monkeypatch.setenv("API_BASEURL", "https://auth.example.com")
    assert run_dev["app_environment"]("127.0.0.1:18001")["API_BASEURL"] == (
        "https://auth.example.com"
    )
