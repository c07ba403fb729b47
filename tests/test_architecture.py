"""The architecture contracts in pyproject.toml ([tool.importlinter]) hold: `lint-imports`.

docs/architecture.md says which module owns what; import-linter checks the
imports that would contradict it (the client reaching into the request
layer, the core importing an observer of its events or the demo project, an
import cycle), so a change that breaks one fails `make test`.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_every_import_contract_is_kept():
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_a_contract_broken_on_purpose_fails(tmp_path):
    """The check can fail: a contract the code does not keep is reported broken."""
    config = tmp_path / "contracts.toml"
    config.write_text(
        '[tool.importlinter]\nroot_packages = ["accounts"]\n\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "state never imports the client (it does)"\n'
        'type = "forbidden"\n'
        'source_modules = ["accounts.state"]\n'
        'forbidden_modules = ["accounts.client"]\n'
    )
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "BROKEN" in result.stdout


def test_the_core_contract_names_every_module_of_the_core():
    """A module added to accounts/ is held to "the core imports neither optional app" too."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = [
        c
        for c in config["tool"]["importlinter"]["contracts"]
        if c["name"].startswith("The token core imports neither optional app")
    ]
    optional = set(contract["forbidden_modules"])
    package = ROOT / "accounts"
    modules = {
        f"accounts.{path.stem if path.is_file() else path.name}"
        for path in package.iterdir()
        if (path.suffix == ".py" and path.stem != "__init__")
        or (path.is_dir() and (path / "__init__.py").exists())
    }
    assert modules - optional == set(contract["source_modules"])
