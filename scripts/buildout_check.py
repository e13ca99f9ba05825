"""``make buildout-check``: run buildout.cfg and check what it produced.

1. versions.cfg must match constraints.txt (scripts/versions_cfg.py --check).
2. build/buildout-venv gets zc.buildout, pinned by constraints.txt.
3. ``buildout -c buildout.cfg`` runs with its bin/, parts/, eggs/,
   develop-eggs/, .installed.cfg and var/ under build/buildout/, so the
   checkout's bin/, parts/ and var/ (``make run``) are not touched. The eggs
   stay there: the next run reuses them (``rm -rf build/buildout*`` starts
   from scratch).
4. bin/instance adduser creates the admin (password: $ADMIN_PASSWORD, or a
   generated one kept in build/buildout/var/admin-password); bin/instance
   console starts on a free loopback port, must answer GET / with 200,
   /manage_main with 200 for the admin and 401 without, and is stopped, on
   failure too.
5. bin/celery --version and bin/supervisord --version must work.

``--smoke`` (.ci/run, when build/buildout/eggs/ is not there from an earlier
run): steps 1 and 2, then buildout with only the parts supervisor-conf and
supervisor, in build/buildout-smoke/ (a few eggs, about 30 seconds), and
bin/supervisord --version. It proves that buildout.cfg parses and that those
parts build with the pins of versions.cfg, not that Plone starts: that needs
every egg (about 8 minutes of buildout from scratch).

Only the standard library is used; run it with the Python of the buildout.
"""

import base64
import os
from pathlib import Path
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request


ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "buildout"
VENV = ROOT / "build" / "buildout-venv"
VAR = BUILD / "var"
START_TIMEOUT = 180


class CheckError(Exception):
    pass


def say(message):
    print(f"buildout-check: {message}", flush=True)


def run(command, shown=None, **kwargs):
    say("$ " + " ".join(str(part) for part in (shown or command)))
    result = subprocess.run([str(part) for part in command], cwd=ROOT, stdin=subprocess.DEVNULL, **kwargs)
    if result.returncode != 0:
        raise CheckError(f"{Path(str(command[0])).name} failed (exit status {result.returncode})")
    return result


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url, auth=None):
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(":".join(auth).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def admin_password():
    password = os.environ.get("ADMIN_PASSWORD", "")
    if not password:
        password = secrets.token_urlsafe(18)
        VAR.mkdir(parents=True, exist_ok=True)
        path = VAR / "admin-password"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(password + "\n")
        say(f"generated the admin password into {path.relative_to(ROOT)}")
    if any(c.isspace() for c in password):
        raise CheckError("ADMIN_PASSWORD must not contain white space")
    return password


def buildout(port, build=BUILD, var=VAR, parts=None):
    if not (VENV / "bin" / "buildout").exists():
        run([sys.executable, "-m", "venv", VENV])
        run(
            [
                VENV / "bin" / "pip",
                "install",
                "--quiet",
                "-c",
                "constraints.txt",
                "pip",
                "setuptools",
                "wheel",
                "zc.buildout",
            ]
        )
    # The check's data is thrown away at every run; the eggs are kept.
    shutil.rmtree(var, ignore_errors=True)
    run(
        [
            VENV / "bin" / "buildout",
            "-N",
            "-U",
            "-c",
            "buildout.cfg",
            f"buildout:bin-directory={build / 'bin'}",
            f"buildout:parts-directory={build / 'parts'}",
            f"buildout:eggs-directory={build / 'eggs'}",
            f"buildout:develop-eggs-directory={build / 'develop-eggs'}",
            f"buildout:installed={build / '.installed.cfg'}",
            f"settings:var={var}",
            f"settings:http-port={port}",
            *([f"buildout:parts={' '.join(parts)}"] if parts else []),
        ]
    )


def stop(process):
    """SIGTERM to the instance's process group; SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def check_instance(port, password):
    bin_ = BUILD / "bin"
    run(
        [bin_ / "instance", "adduser", "admin", password],
        shown=[bin_ / "instance", "adduser", "admin", "<password>"],
        stdout=subprocess.DEVNULL,
    )
    log = VAR / "log" / "instance-console.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{port}"
    say(f"$ bin/instance console  (on {base}, output in {log.relative_to(ROOT)})")
    started = time.monotonic()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [bin_ / "instance", "console"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        while True:
            if process.poll() is not None:
                raise CheckError(f"bin/instance exited with status {process.returncode}: see {log}")
            try:
                root = http_status(base + "/")
                break
            except OSError:
                if time.monotonic() - started > START_TIMEOUT:
                    raise CheckError(f"bin/instance did not answer in {START_TIMEOUT} s: see {log}") from None
                time.sleep(0.5)
        up = time.monotonic() - started
        manage = http_status(base + "/manage_main", ("admin", password))
        anonymous = http_status(base + "/manage_main")
        say(
            f"bin/instance answered after {up:.0f} s: GET / {root}, "
            f"/manage_main as admin {manage}, anonymous {anonymous}"
        )
        if (root, manage, anonymous) != (200, 200, 401):
            raise CheckError("expected 200, 200 and 401")
    finally:
        stop(process)
    say(f"bin/instance stopped (exit status {process.returncode})")
    return up


def smoke():
    started = time.monotonic()
    build = ROOT / "build" / "buildout-smoke"
    try:
        run([sys.executable, ROOT / "scripts" / "versions_cfg.py", "--check"])
        buildout(free_port(), build, build / "var", ["supervisor-conf", "supervisor"])
        result = run([build / "bin" / "supervisord", "--version"], capture_output=True, text=True)
    except CheckError as e:
        say(f"FAILED (smoke): {e}")
        return 1
    say(
        f"smoke OK in {time.monotonic() - started:.0f} s: buildout.cfg parses and "
        f"its supervisor parts build, bin/supervisord {result.stdout.strip()}; "
        "bin/instance was not built (make buildout-check does)"
    )
    return 0


def main():
    if sys.argv[1:] == ["--smoke"]:
        return smoke()
    if sys.argv[1:]:
        sys.exit(f"usage: {sys.argv[0]} [--smoke]")
    started = time.monotonic()
    try:
        run([sys.executable, ROOT / "scripts" / "versions_cfg.py", "--check"])
        port = free_port()
        buildout(port)
        built = time.monotonic() - started
        up = check_instance(port, admin_password())
        versions = {}
        for script in ("celery", "supervisord"):
            result = run([BUILD / "bin" / script, "--version"], capture_output=True, text=True)
            versions[script] = result.stdout.strip().splitlines()[0]
    except CheckError as e:
        say(f"FAILED: {e}")
        return 1
    total = time.monotonic() - started
    say(
        f"OK in {total:.0f} s (buildout {built:.0f} s, instance up in {up:.0f} s): "
        f"bin/instance answers, bin/celery {versions['celery']}, "
        f"bin/supervisord {versions['supervisord']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
