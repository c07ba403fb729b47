"""Run the reference auth API and the web app together for `make run`.

Each server runs in its own process group, so stopping it also stops the
child that runserver's autoreloader forks. Ctrl-C, SIGTERM, or either server
exiting (a port already in use, say) stops both.

Usage: python scripts/run_dev.py APP_ADDR API_ADDR
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Stop(Exception):
    pass


def _stop(signum, frame):
    raise Stop


DEFAULT_API_ADDR = "127.0.0.1:8001"


def app_environment(api_addr: str) -> dict[str, str]:
    """The app's environment: pointed at the reference API wherever `make run` put it.

    `make run API_ADDR=…` moves the API; the app follows it unless API_BASEURL
    is set in the environment. A .env naming your own backend keeps working
    with the default address (the API then just runs unused).
    """
    env = dict(os.environ)
    if api_addr != DEFAULT_API_ADDR and "API_BASEURL" not in env:
        env["API_BASEURL"] = f"http://{api_addr}"
    return env


def main(app_addr: str, api_addr: str) -> int:
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    manage = [sys.executable, str(ROOT / "manage.py")]
    servers = {}
    exit_code = 0
    try:
        servers["auth API"] = subprocess.Popen(
            [*manage, "runauthapi", api_addr], cwd=ROOT, start_new_session=True
        )
        servers["web app"] = subprocess.Popen(
            [*manage, "runserver", app_addr],
            cwd=ROOT,
            start_new_session=True,
            env=app_environment(api_addr),
        )
        while True:
            for name, process in servers.items():
                if process.poll() is not None:
                    print(f"\nThe {name} exited ({process.returncode}); stopping.", flush=True)
                    exit_code = process.returncode or 1
                    raise Stop
            time.sleep(0.3)
    except Stop:
        pass
    finally:
        for process in servers.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in servers.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
    return exit_code


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.rsplit("Usage: ", 1)[1])
    sys.exit(main(sys.argv[1], sys.argv[2]))
