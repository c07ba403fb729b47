"""MkDocs hooks (mkdocs.yml `hooks:`): the settings reference, rendered from the code.

`docs/settings.md` holds the marker below; at build time it becomes a table
of `accounts.conf.SETTINGS` (name, default, meaning), so the page can never
disagree with the defaults the app runs with. `tests/test_docs.py` builds the
site with `--strict` and checks that the page names every setting.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- accounts-settings-table -->"


def settings_table() -> str:
    """Return the markdown table of every setting in `accounts.conf.SETTINGS`."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from accounts.conf import SETTINGS  # reads no Django setting at import

    lines = ["| variable | default | meaning |", "|----------|---------|---------|"]
    for setting in SETTINGS:
        default = setting.shown_default
        shown = f"`{_cell(default)}`" if default not in ("", "unset") else f"*{default or 'empty'}*"
        lines.append(f"| `{setting.name}` | {shown} | {_cell(setting.help)} |")
    return "\n".join(lines)


def _cell(text: str) -> str:
    """Text safe inside a table cell: a `|` would start a new column."""
    return text.replace("|", "\\|").replace("\n", " ")


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, settings_table())
