"""The package as an adopter gets it: a wheel, a new project, the installation page's snippet.

Builds the wheel from this repository, makes a project with `django-admin
startproject` in a temporary folder, installs the wheel into a virtualenv of
its own, appends exactly the `settings.py` and `urls.py` blocks of
docs/installation.md, migrates, and over real HTTP against the reference API
signs in, has the tokens refreshed, calls the backend through the proxy,
lists its sessions and signs out: once with Django's own user model, once
with a custom one that keeps nothing of the package's (so the backend's id
and roles live in `accounts.BackendIdentity`).

The virtualenv gets the wheel and nothing else; the dependencies the wheel
declares are read from this repository's own virtualenv (a `.pth` line), so
the test needs no network and one virtualenv serves both user models.
"""

import re
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest
import requests

from authapi.demo import DEMO_USERS
from tests.servers import ROOT, ServerProcess, _serve, running_authapi

ADMIN, EVALUATOR, _ = DEMO_USERS

CUSTOM_MODEL = '''
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models


class PersonManager(BaseUserManager):
    def create_user(self, email, password=None, **fields):
        person = self.model(email=self.normalize_email(email), **fields)
        person.set_password(password)
        person.save()
        return person


class Person(AbstractBaseUser, PermissionsMixin):
    """A project's own user: signed in by email, with a name field of its own."""

    email = models.EmailField(unique=True)
    full_name = models.CharField(max_length=200, blank=True)
    is_staff = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)

    objects = PersonManager()
    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
'''


def snippet(title: str) -> str:
    """The fenced block of docs/installation.md titled `title`, as written there."""
    page = (ROOT / "docs" / "installation.md").read_text()
    match = re.search(rf'^```python title="{re.escape(title)}"\n(.*?)^```', page, re.M | re.S)
    assert match, f'docs/installation.md has no ```python title="{title}" block'
    return match[1]


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A virtualenv holding the wheel built from this repository; its python."""
    work = tmp_path_factory.mktemp("adoption")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "accounts", source / "accounts", ignore=skip)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(work / "dist"), str(source)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    (wheel,) = (work / "dist").glob("django_token_auth-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "accounts/templates/accounts/login.html" in names
    assert "accounts/usersessions/templates/usersessions/sessions.html" in names
    assert not [n for n in names if n.startswith(("config/", "dashboard/", "authapi/"))]

    env_dir = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--no-index", str(wheel)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # The wheel's dependencies, from this repository's virtualenv (not its editable install).
    Path(site, "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = subprocess.run(
        [str(python), "-c", "import accounts; print(accounts.__file__)"],
        check=True, capture_output=True, text=True, cwd=work,
    ).stdout.strip()  # fmt: skip
    assert where.startswith(site), f"accounts comes from {where}, not the wheel"
    return python


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """The reference API, its access tokens living 3 s so a refresh comes soon."""
    with running_authapi(tmp_path_factory.mktemp("api"), AUTHAPI_ACCESS_TTL="3") as server:
        yield server


def new_project(venv: Path, where: Path, *, custom_user: bool) -> Path:
    """`startproject`, the installation page's blocks appended; return the project folder."""
    where.mkdir()
    subprocess.run(
        [str(venv), "-m", "django", "startproject", "mysite", str(where)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    settings = where / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + "\n" + snippet("settings.py"))
    urls = where / "mysite" / "urls.py"
    urls.write_text(urls.read_text() + "\n" + snippet("urls.py"))
    if custom_user:
        people = where / "people"
        (people / "migrations").mkdir(parents=True)
        (people / "__init__.py").write_text("")
        (people / "migrations" / "__init__.py").write_text("")
        (people / "models.py").write_text(CUSTOM_MODEL)
        settings.write_text(
            settings.read_text()
            + '\nINSTALLED_APPS += ["people"]\nAUTH_USER_MODEL = "people.Person"\n'
        )
    return where


def manage(venv: Path, project: Path, *args: str, env: dict) -> str:
    result = subprocess.run(
        [str(venv), "manage.py", *args],
        cwd=project, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def csrf_of(browser: requests.Session, url: str) -> str:
    page = browser.get(url, timeout=10)
    assert page.status_code == 200, page.text[:500]
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]


@pytest.mark.parametrize("custom_user", [False, True], ids=["auth.User", "a custom user"])
def test_a_new_project_signs_in_refreshes_proxies_and_signs_out(
    venv, api, tmp_path, custom_user
):
    project = new_project(venv, tmp_path / "project", custom_user=custom_user)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "API_BASEURL": api.url,
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if custom_user:
        manage(venv, project, "makemigrations", "people", env=env)
    manage(venv, project, "migrate", "--noinput", env=env)
    assert "no issues" in manage(venv, project, "check", env=env)

    with _serve(
        [str(venv), "-m", "gunicorn", "mysite.wsgi", "--bind", "127.0.0.1:0",
         "--threads", "4", "--access-logfile", "-"],
        env,
        tmp_path / "app.log",
        r"Listening at: http://127\.0\.0\.1:(?P<port>\d+)",
        ServerProcess,
        cwd=project,
    ) as app:  # fmt: skip
        browser = requests.Session()
        login = f"{app.url}/accounts/login/"
        signed_in = browser.post(
            login,
            data={"email": ADMIN.email, "password": ADMIN.password,
                  "csrfmiddlewaretoken": csrf_of(browser, login)},
            headers={"Referer": login}, allow_redirects=False, timeout=10,
        )  # fmt: skip
        assert signed_in.status_code == 302, signed_in.text[:1000]
        first_access = browser.cookies.get("access_token")
        assert first_access and browser.cookies.get("refresh_token")

        me = browser.get(f"{app.url}/api/users/me", timeout=10)
        assert me.status_code == 200 and me.json()["email"] == ADMIN.email
        backend_id = str(me.json()["id"])

        refreshes = api.stats()["refresh"]
        time.sleep(3.2)  # the access token has expired
        me = browser.get(f"{app.url}/api/users/me", timeout=10)
        assert me.status_code == 200 and me.json()["email"] == ADMIN.email
        assert api.stats()["refresh"] == refreshes + 1
        assert browser.cookies.get("access_token") != first_access

        sessions = browser.get(f"{app.url}/accounts/sessions/", timeout=10)
        assert sessions.status_code == 200
        assert "This browser" in sessions.text
        # Gated by AUTH_OPS_ROLES: the roles are read from wherever this user model keeps them.
        health = browser.get(f"{app.url}/ops/health/", timeout=10)
        assert health.status_code == 200 and "Sign-in health" in health.text

        if not custom_user:
            package_pages_in_chromium(app.url)

        logout = f"{app.url}/accounts/logout/"
        out = browser.post(
            logout, data={"csrfmiddlewaretoken": csrf_of(browser, logout)},
            headers={"Referer": logout}, allow_redirects=False, timeout=10,
        )  # fmt: skip
        assert out.status_code == 302
        assert not browser.cookies.get("refresh_token")
        gone = browser.get(f"{app.url}/api/users/me", timeout=10)
        assert gone.status_code == 401

    kind = "people.Person" if custom_user else "auth.User"
    check = (
        "from django.contrib.auth import get_user_model; from accounts.models import "
        "BackendIdentity; u = get_user_model().objects.get(); i = BackendIdentity.objects.get();"
        "print(u._meta.label, i.user_id == u.pk, i.backend_id, i.roles, u.has_usable_password())"
    )
    printed = manage(venv, project, "shell", "-v", "0", "-c", check, env=env).split()
    assert printed == [kind, "True", backend_id, "['admin']", "False"]



def package_pages_in_chromium(base_url: str) -> None:
    """The package's own templates (no project template over them) on a phone and a desktop:
    axe-core finds no serious or critical violation and nothing is wider than the screen."""
    from axe_playwright_python.sync_playwright import Axe

    from tests.browser import chromium, sign_in
    from tests.test_browser_pages import blocking_violations

    axe = Axe()
    with chromium() as chrome:
        for width, height in ((390, 844), (1280, 800)):
            context = chrome.new_context(
                base_url=base_url, viewport={"width": width, "height": height}
            )
            page = context.new_page()
            seen = []
            page.goto("/accounts/login/")
            seen.append(page.url)
            assert blocking_violations(axe, page) == []
            sign_in(page, ADMIN)
            page.wait_for_url(lambda url: "/accounts/login/" not in url)
            for path in ("/accounts/sessions/", "/ops/health/"):
                assert page.goto(path).status == 200
                seen.append(page.url)
                assert blocking_violations(axe, page) == [], page.url
                wide = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
                assert wide[0] <= wide[1], f"{path} is {wide[0]} px wide in {wide[1]} px"
            assert len(seen) == 3
            context.close()
