"""Summarise `mutmut run` (make mutate): the share of mutants killed per module, and the survivors.

    python bench/mutation_report.py [--fail-under 90] [NAME ...]
    python bench/mutation_report.py --survivors [NAME ...]

Reads mutmut's own results (`mutmut results --all true`, `mutmut show NAME`)
from the project root, prints the counts per status, the killed share per
module and in all, and every surviving mutant as file:line with the line
before and after the mutation, grouped by module. NAMEs are mutant names or
globs as `mutmut run` takes them (`accounts.throttle.*`): only those mutants
are reported. Mutants a sitting has not reached yet are counted apart ("not
checked") and left out of the shares. Writes bench/results/mutation.json.
Exits 1 only when --fail-under is given and a reported module's killed share
is below it. --survivors prints only the names of the survivors, one a line, to
test them again after adding tests:
`make mutate MUTATE_ARGS="$(.venv/bin/python bench/mutation_report.py --survivors)"`.

A mutant counts as killed when a test failed on it or it made the tests time
out (mutmut's own score counts both); "no tests" means no selected test ran
the mutated function, which is a survivor too.
"""

import argparse
import ast
import fnmatch
import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

try:  # what `mutmut show` prints, without a process per mutant (mutmut 3.8)
    from mutmut.mutation.diff_apply import get_diff_for_mutant
except ImportError:
    get_diff_for_mutant = None

ROOT = Path(__file__).resolve().parent.parent
MUTMUT = str(Path(sys.executable).with_name("mutmut"))
KILLED = {"killed", "timeout", "caught by type check"}
SURVIVED = {"survived", "no tests"}
RESULT = re.compile(r"^\s+(?P<name>\S+__mutmut_\d+): (?P<status>.+?)\s*$")
HUNK = re.compile(r"^@@ -(?P<start>\d+)")


def mutmut(*args: str) -> str:
    return subprocess.run(
        [MUTMUT, *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


def results() -> dict[str, str]:
    """Return {mutant name: status} for every mutant mutmut knows."""
    found = {}
    for line in mutmut("results", "--all", "true").splitlines():
        match = RESULT.match(line)
        if match:
            found[match["name"]] = match["status"]
    return found


def selected(name: str, patterns: list[str]) -> bool:
    """Return whether a mutant is one of `patterns`, matched as `mutmut run` matches them."""
    return any(name == pattern or fnmatch.fnmatch(name, pattern) for pattern in patterns)


def split_name(name: str) -> tuple[str, str, str | None, str]:
    """Return (module path, function, class or None, name) of a mutant name.

    `accounts.record.x_token_hash__mutmut_3` -> accounts/record.py, token_hash;
    `accounts.state.xǁTokenStateǁrenew__mutmut_7` -> accounts/state.py, renew, TokenState.
    """
    mangled = name.rsplit("__mutmut_", 1)[0]
    module, _, function = mangled.rpartition(".")
    cls = None
    if function.startswith("xǁ"):
        _, cls, function = function.split("ǁ")
    elif function.startswith("x_"):
        function = function[2:]
    return module.replace(".", "/") + ".py", function, cls, name


def function_lines(path: Path) -> dict[tuple[str | None, str], int]:
    """Return the def line of every function and method of a module."""
    lines = {}
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines[(None, node.name)] = node.lineno
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines[(node.name, item.name)] = item.lineno
    return lines


def describe(name: str, defs: dict) -> dict:
    """Return file, line, function and the line before/after the mutation."""
    path, function, cls, _ = split_name(name)
    diff = []
    for _attempt in range(3):  # `mutmut show` may fail while a run still writes
        try:
            if get_diff_for_mutant is not None:
                diff = get_diff_for_mutant(name, path=Path(path)).splitlines()
            else:
                diff = mutmut("show", name).splitlines()
            break
        except Exception:  # noqa: BLE001, S112 - a mutant file being rewritten: try again
            continue
    start, offset, before, after, first_changed = 1, 0, [], [], 1
    for line in diff:
        hunk = HUNK.match(line)
        if hunk:
            start, offset = int(hunk["start"]), 0
            continue
        if line.startswith(("---", "+++", "#")):
            continue
        if line.startswith("-"):
            if not before:
                first_changed = start + offset
            before.append(line[1:].strip())
            offset += 1
        elif line.startswith("+"):
            after.append(line[1:].strip())
        else:
            offset += 1
    def_line = defs.get(path, {}).get((cls, function))
    line_no = def_line + first_changed - 1 if def_line and before else def_line
    return {
        "name": name,
        "file": path,
        "line": line_no,
        "function": f"{cls}.{function}" if cls else function,
        "before": " / ".join(before) or "(diff unavailable)",
        "after": " / ".join(after) or "(removed)",
    }


def main() -> int:
    os.chdir(ROOT)  # mutmut reads mutants/ from the working directory
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--fail-under", type=float, default=None, help="killed share of each module, percent"
    )
    parser.add_argument(
        "--survivors", action="store_true", help="print the survivors' names and nothing else"
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help="mutant names or globs (accounts.throttle.*)"
    )
    args = parser.parse_args()

    statuses = results()
    if args.names:
        statuses = {n: s for n, s in statuses.items() if selected(n, args.names)}
    if not statuses:
        print(
            "No mutmut results" + (f" for {' '.join(args.names)}" if args.names else "") + ": "
            "run `make mutate` first."
        )
        return 1
    if args.survivors:
        print("\n".join(sorted(n for n, s in statuses.items() if s in SURVIVED)))
        return 0
    counts = Counter(statuses.values())
    tested = {n: s for n, s in statuses.items() if s not in {"skipped", "not checked"}}
    killed = sum(s in KILLED for s in tested.values())
    share = 100 * killed / len(tested) if tested else 0.0

    by_module: dict[str, Counter] = defaultdict(Counter)
    for name, status in statuses.items():
        by_module[split_name(name)[0]]["killed" if status in KILLED else status] += 1
    survivors = sorted(n for n, s in tested.items() if s in SURVIVED)
    # Line numbers from the source as it was when the run started (make mutate
    # keeps a copy), else from the source as it is now.
    originals = ROOT / "mutants" / ".originals"
    defs = {
        path: function_lines(
            originals / Path(path).name if (originals / Path(path).name).exists() else ROOT / path
        )
        for path in {split_name(n)[0] for n in survivors}
    }
    with ThreadPoolExecutor(max_workers=4) as pool:
        described = list(pool.map(lambda n: describe(n, defs), survivors))
    for item in described:
        item["status"] = statuses[item["name"]]

    print("\nMutation testing (mutmut, in-process tests)\n")
    print(
        "| module | mutants | killed | survived | no tests | other | not checked | killed share |"
    )
    print("|---|---|---|---|---|---|---|---|")
    shares = {}
    for module in sorted(by_module):
        c = by_module[module]
        unchecked = c["not checked"] + c["skipped"]
        total = sum(c.values()) - unchecked
        other = total - c["killed"] - c["survived"] - c["no tests"]
        shares[module] = 100 * c["killed"] / total if total else None
        shown = "–" if shares[module] is None else f"{shares[module]:.1f}%"
        print(
            f"| {module} | {total} | {c['killed']} | {c['survived']} | {c['no tests']} | "
            f"{other} | {unchecked} | {shown} |"
        )
    print(
        f"| **all** | {len(tested)} | {killed} | {counts['survived']} | {counts['no tests']} | "
        f"{len(tested) - killed - counts['survived'] - counts['no tests']} | "
        f"{len(statuses) - len(tested)} | **{share:.1f}%** |"
    )
    print(f"\nStatuses: {dict(sorted(counts.items()))}")
    current = None
    for item in sorted(described, key=lambda i: (i["file"], i["line"] or 0, i["name"])):
        if item["file"] != current:
            current = item["file"]
            print(f"\nSurvivors in {current}:")
        tag = "" if item["status"] == "survived" else f" [{item['status']}]"
        print(
            f"  {Path(item['file']).name}:{item['line']} {item['function']}{tag}: "
            f"`{item['before']}` -> `{item['after']}`  ({item['name'].rsplit('__', 1)[1]})"
        )
    print(
        f"\nKilled {killed} of {len(tested)} mutants: {share:.1f}% "
        f"({len(survivors)} survived or had no test)."
    )
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "mutation.json").write_text(
        json.dumps(
            {
                "names": args.names,
                "killed_share_percent": round(share, 1),
                "killed_share_by_module": {
                    m: None if s is None else round(s, 1) for m, s in shares.items()
                },
                "killed": killed,
                "tested": len(tested),
                "statuses": counts,
                "by_module": by_module,
                "survivors": described,
            },
            indent=2,
        )
    )
    if args.fail_under is not None:
        below = [m for m, s in shares.items() if s is not None and s < args.fail_under]
        if below:
            print(f"Below --fail-under {args.fail_under:g}%: {', '.join(below)}.")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
