"""The docs: the MkDocs site builds with --strict, the README stays short, no link is broken.

The build runs as a subprocess (`mkdocs build --strict`), so under `make test`
it runs in parallel with the rest of the suite; a broken link, a missing
anchor or a page left out of the nav fails it with MkDocs' own words.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README_MAX_LINES = 250

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target), and reference definitions `[name]: target`.
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
ENV_LINE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]+)=", re.M)


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def relative_links(path: Path) -> list[str]:
    """Return the links of a markdown file that point inside the repository."""
    text = INLINE_CODE.sub("", FENCE.sub("", path.read_text()))
    links = INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)
    return [
        link
        for link in links
        if not re.match(r"^[a-z][a-z0-9+.-]*:", link, re.I) and not link.startswith("#")
    ]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(site_dir),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        # Material's notice about MkDocs 2.0 is no warning of ours.
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}{result.stderr}"
    return site_dir


def test_the_docs_build_with_strict(site):
    assert (site / "index.html").is_file()


def test_the_settings_page_lists_every_setting_of_accounts_conf_with_its_default(site):
    from accounts.conf import SETTINGS

    page = (site / "settings" / "index.html").read_text()
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", page, re.S):
        cells = [re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]
        if len(cells) == 3:
            rows.setdefault(cells[0], cells[1])
    for setting in SETTINGS:
        assert setting.name in rows, f"{setting.name} is missing from the settings page"
        shown = setting.shown_default or "empty"
        assert rows[setting.name] == shown, (setting.name, rows[setting.name], shown)


def test_every_variable_of_env_example_is_on_the_settings_page():
    """`.env.example` lists every variable; docs/settings.md (or the generated table) says each."""
    from accounts.conf import SETTINGS

    generated = {setting.name for setting in SETTINGS}
    written = (DOCS / "settings.md").read_text()
    variables = ENV_LINE.findall((ROOT / ".env.example").read_text())
    missing = [name for name in variables if name not in generated and f"`{name}`" not in written]
    assert missing == [], f"add these to a table of docs/settings.md: {missing}"


def test_the_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; at most {README_MAX_LINES}: move reference "
        "material to docs/"
    )


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file(path):
    broken = []
    for link in relative_links(path):
        target = link.split("#", 1)[0].split("?", 1)[0]
        if not (path.parent / target).exists():
            broken.append(link)
    assert broken == [], f"{path.relative_to(ROOT)} links to files that do not exist: {broken}"


def test_the_link_finder_sees_links_and_skips_code(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "[a](docs/a.md) ![b](b.png#x) [c](https://example.com) [d](#here)\n"
        "`[e](e.md)`\n```\n[f](f.md)\n```\n[g]: g.md\n"
    )
    assert sorted(relative_links(page)) == ["b.png#x", "docs/a.md", "g.md"]


# The modules a comment or a page names by path: each must exist. The changelog and
# bench/README.md are histories, where a path names what was there then.
NAMED_MODULE = re.compile(
    r"(?<![\w/.-])(?:accounts|dashboard|config|authapi|tests|bench|scripts)/[\w/]*\w\.py\b"
)
HISTORIES = {"CHANGELOG.md", "bench/README.md"}


def named_modules(text: str) -> set[str]:
    return set(NAMED_MODULE.findall(text))


def test_every_module_a_comment_or_page_names_exists():
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    missing = {}
    for name in tracked:
        path = ROOT / name
        if name in HISTORIES or path.suffix not in {".py", ".md", ".html", ".js", ".css", ".toml"}:
            continue
        gone = sorted(m for m in named_modules(path.read_text()) if not (ROOT / m).exists())
        if gone:
            missing[name] = gone
    assert missing == {}, f"paths that name no file of the repository: {missing}"


def test_the_module_finder_sees_paths_and_not_their_neighbours():
    text = "see accounts/usersessions/signins.py, `dashboard/views.py`; not x/accounts/a.py or a.py"
    assert named_modules(text) == {"accounts/usersessions/signins.py", "dashboard/views.py"}
