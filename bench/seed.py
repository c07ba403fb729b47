"""The seed's Next.js + Auth.js app, for bench/run.py's side-by-side round (h).

The seed (SPEC: `peers/seed-nextjs`, the article's code made runnable) is
copied with bench/seed/ laid over it (its signed-in page, app/bench/page.tsx),
installed with `npm ci` and built with `next build` once, in a folder of the
user's cache named by a hash of those files: the repository tracks none of it.
It runs with `next start` against the same reference API as the project, on
a port the OS assigns.

    SEED_NEXTJS_DIR  where the seed's source is (default: ../shared/peers/seed-nextjs
                     beside this repository)
    BENCH_CACHE      where builds are kept (default: ~/.cache/auth-bench)
"""

import contextlib
import hashlib
import os
import secrets
import shutil
import statistics
import subprocess
from pathlib import Path

import requests

from tests.servers import ServerProcess, _serve

ROOT = Path(__file__).resolve().parent.parent
OVERLAY = ROOT / "bench" / "seed"
SKIPPED = ("node_modules", ".next")


def source() -> Path:
    return Path(os.environ.get("SEED_NEXTJS_DIR") or ROOT.parent / "shared/peers/seed-nextjs")


def missing() -> str | None:
    """Why the seed cannot run here, or None."""
    if not (source() / "package.json").is_file():
        return f"no seed app at {source()} (set SEED_NEXTJS_DIR)"
    for tool in ("node", "npm"):
        if not shutil.which(tool):
            return f"{tool} is not installed (Node 20 runs the seed app)"
    return None


def _files(folder: Path) -> list[Path]:
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and not set(path.relative_to(folder).parts) & set(SKIPPED)
    )


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for folder in (source(), OVERLAY):
        for path in _files(folder):
            digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def build() -> Path:
    """Return a built copy of the seed with bench/seed/ over it, building it the first time."""
    cache = Path(os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "auth-bench")
    folder = cache / f"seed-nextjs-{_fingerprint()}"
    if (folder / ".next" / "BUILD_ID").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    for base in (source(), OVERLAY):
        for path in _files(base):
            target = folder / path.relative_to(base)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    log = folder / "build.log"
    env = {**os.environ, "NEXT_TELEMETRY_DISABLED": "1"}
    for command in (["npm", "ci", "--no-audit", "--no-fund"], ["npx", "next", "build"]):
        with open(log, "a") as out:
            done = subprocess.run(command, cwd=folder, env=env, stdout=out, stderr=out)
        if done.returncode:
            raise RuntimeError(
                f"{' '.join(command)} failed in {folder}:\n{log.read_text()[-3000:]}"
            )
    return folder


@contextlib.contextmanager
def running(folder: Path, api_url: str, log_path: Path):
    """Serve a built seed with `next start` against `api_url`; yield a ServerProcess."""
    env = {
        **os.environ,
        "API_BASEURL": api_url,
        "NEXT_PUBLIC_API_BASEURL": api_url,
        "AUTH_SECRET": secrets.token_hex(32),
        "AUTH_TRUST_HOST": "true",
        "NODE_ENV": "production",
        "NEXT_TELEMETRY_DISABLED": "1",
    }
    command = ["node", "node_modules/next/dist/bin/next", "start", "-p", "0", "-H", "127.0.0.1"]
    with _serve(
        command,
        env,
        log_path,
        r"Local:\s+http://127\.0\.0\.1:(?P<port>\d+)[\s\S]*Ready in",
        ServerProcess,
        cwd=folder,
    ) as server:
        yield server


def sign_in(url: str, email: str, password: str) -> requests.Session:
    """Sign in to the seed as a browser would; return the browser, its cookies checked."""
    browser = requests.Session()
    csrf = browser.get(f"{url}/api/auth/csrf", timeout=30).json()["csrfToken"]
    answer = browser.post(
        f"{url}/api/auth/callback/credentials",
        data={"csrfToken": csrf, "email": email, "password": password, "callbackUrl": url},
        allow_redirects=False,
        timeout=30,
    )
    names = set(browser.cookies.keys())
    wanted = {"authjs.session-token", "access_token", "refresh_token"}
    if answer.status_code not in (302, 303) or not wanted <= names:
        raise RuntimeError(
            f"signing in to the seed answered {answer.status_code} with cookies {sorted(names)}"
        )
    return browser


def cookie_header(browser: requests.Session) -> str:
    return "; ".join(f"{name}={value}" for name, value in browser.cookies.items())


# --- (h) side by side -------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and every descendant alive, plus the children it reaped."""
    parents: dict[int, int] = {}
    times: dict[int, tuple[float, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # proc(5): after the command, index 1 is ppid; 11, 12 utime, stime; 13, 14 of reaped
        # children.
        child = int(stat.parent.name)
        parents[child] = int(fields[1])
        times[child] = (
            (int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
            (int(fields[13]) + int(fields[14])) / CLOCK_TICKS,
        )
    tree, grew = {pid}, True
    while grew:
        more = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(times[p][0] for p in tree if p in times) + times.get(pid, (0, 0))[1]


def measure(arms: dict, *, rounds: int, seconds: float, wrk) -> dict:
    """Run each arm at 1 connection (latency) and 16 (throughput), ABAB over `rounds`.

    `arms` maps a name to (url, cookie header, server pid). Returns per arm the
    median p50/p99 at one connection, requests/s at 16 and the server's CPU
    milliseconds per request during the 16-connection runs (from /proc).
    """
    for url, cookie, _ in arms.values():  # warm-up, and every arm must answer 2xx
        warm = wrk(url, cookie, seconds=2, connections=4, threads=1)
        if warm["non_2xx"]:
            raise RuntimeError(f"(h) {url} answered {warm['non_2xx']} non-2xx in its warm-up")
    runs: dict[str, dict[str, list]] = {a: {"c1": [], "c16": [], "cpu": []} for a in arms}
    for index in range(rounds):
        for arm in list(arms) if index % 2 == 0 else reversed(list(arms)):
            url, cookie, pid = arms[arm]
            runs[arm]["c1"].append(wrk(url, cookie, seconds=seconds, connections=1, threads=1))
            before = tree_cpu_seconds(pid)
            loaded = wrk(url, cookie, seconds=seconds, connections=16, threads=2)
            cpu = tree_cpu_seconds(pid) - before
            runs[arm]["c16"].append(loaded)
            runs[arm]["cpu"].append(1000 * cpu / max(1, loaded["requests"]))
            for run in (runs[arm]["c1"][-1], loaded):
                if run["non_2xx"]:
                    raise RuntimeError(f"(h) {url} answered {run['non_2xx']} non-2xx")
    median = statistics.median
    return {
        arm: {
            "p50_ms": median(r["p50_ms"] for r in found["c1"]),
            "p99_ms": median(r["p99_ms"] for r in found["c1"]),
            "rps": median(r["rps"] for r in found["c16"]),
            "cpu_ms": median(found["cpu"]),
            "rounds": found,
        }
        for arm, found in runs.items()
    }
