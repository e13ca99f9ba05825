"""The development server behind ``make run`` and ``make stop``.

``python scripts/devserver.py run``

1. refuses to start if a ``make run`` is already running, or if the HTTP
   port (env ``PORT``, default 8080) is taken;
2. picks the broker: the Redis that answers at ``BROKER_URL`` (default
   ``redis://localhost:6379/0``), else a private ``redis-server`` started
   under supervisor on 6379 or a free port (only when ``BROKER_URL`` is not
   set: a broker you named and that does not answer is an error);
3. on first run, writes an admin password to ``var/admin-password`` (0600)
   and creates the Plone site ``Plone`` with ``scripts/create_site.py``;
4. writes the Zope instance config to ``var/etc/`` (every run, so moving the
   checkout or changing ``PORT`` just works);
5. runs ``supervisord -n -c supervisor.cfg`` (Redis if private, Plone, the
   Celery worker), waits until they are up and prints the URLs and login.
   Ctrl-C stops everything.

``python scripts/devserver.py stop`` asks that supervisord to shut down,
waits until it is gone, and ends any program left over from a supervisord
that was killed.

Only the standard library, supervisor and redis (both installed in the
virtualenv) are used.
"""

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xmlrpc.client
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
ETC = VAR / "etc"
LOG = VAR / "log"
CONFIG = ROOT / "supervisor.cfg"
SOCKET = VAR / "supervisor.sock"
SUPERVISORD_PID = VAR / "supervisord.pid"
PASSWORD_FILE = VAR / "admin-password"
SITE_MARKER = VAR / "site-created"
DATA_FS = VAR / "filestorage" / "Data.fs"
# Not resolved: in a virtualenv, bin/python is a symlink to the system one.
BIN = Path(sys.executable).parent

ADMIN = "admin"
SITE_ID = "Plone"
DEFAULT_PORT = 8080
DEFAULT_BROKER_URL = "redis://localhost:6379/0"
DEFAULT_REDIS_PORT = 6379
STARTUP_TIMEOUT = 300  # seconds to wait for Plone to answer

# Pid files written by the programs themselves (see var/etc/zope.conf and
# supervisor.cfg), with a word their command line must contain: used to find
# programs left over by a supervisord that died without stopping them.
PROGRAM_PIDS = {
    "plone": (VAR / "plone.pid", "runwsgi"),
    "worker": (VAR / "worker.pid", "celery"),
    "redis": (VAR / "redis.pid", "redis-server"),
}


class DevServerError(Exception):
    """A problem the user can fix; the message says how."""


def say(message=""):
    print(message, flush=True)


def relative(path):
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --- supervisord ---------------------------------------------------------


def supervisor():
    """Return an XML-RPC proxy to our supervisord (over var/supervisor.sock)."""
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, f"unix://{SOCKET}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def running_supervisord_pid():
    """Return the pid of our supervisord if it answers on its socket."""
    if not SOCKET.exists():
        return None
    try:
        return supervisor().supervisor.getPID()
    except (OSError, xmlrpc.client.Error):
        return None


def pid_alive(pid, word=None):
    """Is ``pid`` a live process (whose command line has ``word``)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process: not ours
    if word is None:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid file
    if not cmdline:
        return False  # a zombie
    return word.encode() in cmdline


def read_pid(path):
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def leftover_programs():
    """Return ``{name: pid}`` of programs of ours that are still running."""
    found = {}
    for name, (pidfile, word) in PROGRAM_PIDS.items():
        pid = read_pid(pidfile)
        if pid and pid_alive(pid, word):
            found[name] = pid
    return found


def wait_gone(pid, word, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid, word):
            return True
        time.sleep(0.2)
    return not pid_alive(pid, word)


def kill_leftovers():
    """End programs left over by a supervisord that died; return their names."""
    leftovers = leftover_programs()
    for name, pid in leftovers.items():
        word = PROGRAM_PIDS[name][1]
        say(f"stopping the {name} left over from an earlier run (pid {pid})")
        # supervisord gave each program its own process group: Celery's pool
        # processes are in the worker's group.
        sig = signal.SIGINT if name == "plone" else signal.SIGTERM
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            continue
        if not wait_gone(pid, word, 30):
            say(f"  {name} (pid {pid}) did not stop in 30 s: killing it")
            try:
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            wait_gone(pid, word, 5)
    return list(leftovers)


# --- checks ----------------------------------------------------------------


def http_port():
    value = os.environ.get("PORT", "").strip() or str(DEFAULT_PORT)
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise DevServerError(
            f"PORT={value!r} is not a TCP port: use a number such as 8080, "
            "e.g. `make run PORT=8081`"
        )
    return port


def port_in_use(port):
    """Can Plone not listen on 127.0.0.1:port, or does localhost:port answer?"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    # Something listening on ::1 only would get the browser's "localhost".
    try:
        infos = socket.getaddrinfo("localhost", port, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as s:
            s.settimeout(0.5)
            if s.connect_ex(address) == 0:
                return True
    return False


def free_port(preferred):
    """Return ``preferred`` if nothing uses it on 127.0.0.1, else a free port."""
    if not port_in_use(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_answers(url):
    """Return ``None`` if a Redis answers PING at ``url``, else why not."""
    import redis

    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=2
        )
        try:
            client.ping()
        finally:
            client.close()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
        return f"no answer ({e})"
    except redis.exceptions.RedisError as e:
        raise DevServerError(
            f"the Redis at {url} answers but refuses us: {e}. Fix BROKER_URL "
            "(password, database number) and try again"
        ) from None
    except ValueError as e:
        raise DevServerError(
            f"BROKER_URL={url!r} is not a Redis url ({e}): use one such as "
            f"{DEFAULT_BROKER_URL}"
        ) from None
    return None


def choose_broker():
    """Return ``(environment, description)`` for the broker of this run."""
    named = os.environ.get("BROKER_URL", "").strip()
    url = named or DEFAULT_BROKER_URL
    problem = redis_answers(url)
    env = {
        "DEVSERVER_REDIS_AUTOSTART": "false",
        "DEVSERVER_REDIS_PORT": str(DEFAULT_REDIS_PORT),
        "DEVSERVER_REDIS_SERVER": shutil.which("redis-server") or "redis-server",
    }
    if problem is None:
        description = f"{url} (a Redis that was already running)"
    elif named:
        raise DevServerError(
            f"BROKER_URL={named} gives {problem}. Start that Redis, or unset "
            "BROKER_URL so that `make run` uses the one on localhost:6379 or "
            "starts its own"
        )
    else:
        if shutil.which("redis-server") is None:
            raise DevServerError(
                f"no Redis answers at {url} and redis-server is not installed: "
                "run `sudo apt-get install redis-server` (Debian/Ubuntu) or "
                "start a Redis and set BROKER_URL to it, then try again"
            )
        port = free_port(DEFAULT_REDIS_PORT)
        url = f"redis://127.0.0.1:{port}/0"
        env["DEVSERVER_REDIS_AUTOSTART"] = "true"
        env["DEVSERVER_REDIS_PORT"] = str(port)
        description = f"{url} (a private redis-server, data in var/redis/)"
    env["BROKER_URL"] = url
    env["CELERY_RESULT_BACKEND"] = (
        os.environ.get("CELERY_RESULT_BACKEND", "").strip() or url
    )
    return env, description


# --- the Zope instance ---------------------------------------------------


def admin_password():
    """Return ``(password, created)``; the password is made on first run."""
    VAR.mkdir(exist_ok=True)
    if PASSWORD_FILE.exists():
        mode = PASSWORD_FILE.stat().st_mode & 0o777
        if mode != 0o600:
            PASSWORD_FILE.chmod(0o600)
            say(f"{relative(PASSWORD_FILE)} had mode {mode:o}: set it to 600")
        password = PASSWORD_FILE.read_text(encoding="utf-8").strip()
        if not password:
            raise DevServerError(
                f"{relative(PASSWORD_FILE)} is empty: remove it, and "
                "`make run` makes a new password"
            )
        return password, False
    password = secrets.token_urlsafe(18)
    fd = os.open(PASSWORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(password + "\n")
    return password, True


ZOPE_CONF = """\
# Generated by scripts/devserver.py at every `make run`: edits are lost.
%define VAR {var}

instancehome $VAR
clienthome $VAR
pid-filename $VAR/plone.pid
debug-mode off
verbose-security off
default-zpublisher-encoding utf-8

<environment>
    CHAMELEON_CACHE $VAR/cache
</environment>

<zodb_db main>
    <filestorage>
        path $VAR/filestorage/Data.fs
        blob-dir $VAR/blobstorage
    </filestorage>
    mount-point /
    cache-size 30000
</zodb_db>
"""

ZOPE_INI = """\
# Generated by scripts/devserver.py at every `make run`: edits are lost.
# Started by supervisor.cfg: runwsgi var/etc/zope.ini

[app:zope]
use = egg:Zope#main
zope_conf = %(here)s/zope.conf

[server:main]
use = egg:waitress#main
listen = 127.0.0.1:{port}
threads = 4

[filter:translogger]
use = egg:Paste#translogger
setup_console_handler = False

[pipeline:main]
pipeline =
    egg:Zope#httpexceptions
    translogger
    zope

[loggers]
keys = root, wsgi

[handlers]
keys = console, accesslog

[formatters]
keys = generic, message

[formatter_generic]
format = %(asctime)s %(levelname)s [%(name)s:%(lineno)s][%(threadName)s] %(message)s
datefmt = %Y-%m-%d %H:%M:%S

[formatter_message]
format = %(message)s

# Plone's log goes to stderr, which supervisor writes to var/log/plone.log.
[logger_root]
level = INFO
handlers = console

[logger_wsgi]
level = INFO
handlers = accesslog
qualname = wsgi
propagate = 0

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[handler_accesslog]
class = FileHandler
args = (r'{log}/access.log', 'a')
level = INFO
formatter = message
"""

# Products.CMFPlone includes, with plone.autoinclude, every package with a
# `z3c.autoinclude.plugin` entry point `target = plone`: our add-on too.
SITE_ZCML = """\
<!-- Generated by scripts/devserver.py at every `make run`: edits are lost. -->
<configure
    xmlns="http://namespaces.zope.org/zope"
    xmlns:five="http://namespaces.zope.org/five">

  <include package="Zope2.App" />

  <five:loadProducts file="meta.zcml" />
  <five:loadProducts />
  <five:loadProductsOverrides />

</configure>
"""


def write_instance(port):
    for directory in (ETC, LOG, VAR / "cache", VAR / "filestorage",
                      VAR / "blobstorage", VAR / "redis"):
        directory.mkdir(parents=True, exist_ok=True)
    files = {
        "zope.conf": ZOPE_CONF.format(var=VAR),
        "zope.ini": ZOPE_INI.replace("{port}", str(port)).replace("{log}", str(LOG)),
        "site.zcml": SITE_ZCML,
    }
    for name, text in files.items():
        (ETC / name).write_text(text, encoding="utf-8")


def create_site(env):
    """Run scripts/create_site.py if the site was not made (with this password)."""
    say(f"creating the Plone site {SITE_ID!r} in {relative(DATA_FS)} "
        "(first run, takes a minute) ...")
    SITE_MARKER.unlink(missing_ok=True)
    result = subprocess.run(
        [str(BIN / "python"), str(ROOT / "scripts" / "create_site.py"),
         str(ETC / "zope.conf"), str(PASSWORD_FILE)],
        cwd=ROOT, env=env,
    )
    if result.returncode != 0:
        raise DevServerError(
            "creating the Plone site failed (see the messages above). Fix the "
            "cause and run `make run` again; to start from scratch, remove var/"
        )
    SITE_MARKER.write_text(
        f"{SITE_ID} created by scripts/create_site.py; remove this file and "
        "`make run` checks the site and the admin user again.\n"
    )


# --- run ---------------------------------------------------------------------


def tail(path, lines=25):
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def plone_answers(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5):
            return True
    except urllib.error.HTTPError:
        return True  # 401, 404...: Zope answered
    except (OSError, ValueError):
        return False


def wait_until_up(process, port):
    """Wait until supervisord runs every program and Plone answers.

    Return ``None`` when up, else a message saying what went wrong.
    """
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return (f"supervisord exited (status {process.returncode}):\n"
                    + tail(LOG / "supervisord.log"))
        try:
            infos = supervisor().supervisor.getAllProcessInfo()
        except (OSError, xmlrpc.client.Error):
            time.sleep(0.5)
            continue
        for info in infos:
            if info["statename"] in ("FATAL", "EXITED"):
                log = info["stdout_logfile"] or LOG / "supervisord.log"
                return (f"{info['name']} {info['statename']}: "
                        f"{info['spawnerr'] or info['description']}; "
                        f"the end of {relative(log)}:\n" + tail(log))
        states = {info["name"]: info["statename"] for info in infos}
        if all(state in ("RUNNING", "STOPPED") for state in states.values()) \
                and plone_answers(port):
            return None
        time.sleep(1)
    return (f"Plone did not answer on port {port} in {STARTUP_TIMEOUT} s; "
            f"see {relative(LOG / 'plone.log')}")


def run(args):
    pid = running_supervisord_pid()
    if pid:
        raise DevServerError(
            f"`make run` is already running here (supervisord pid {pid}): "
            "stop it with Ctrl-C in its terminal or with `make stop`"
        )
    leftovers = leftover_programs()
    if leftovers:
        names = ", ".join(f"{name} (pid {p})" for name, p in leftovers.items())
        raise DevServerError(
            f"programs of an earlier `make run` are still running: {names}. "
            "Run `make stop` first"
        )
    port = http_port()
    if port_in_use(port):
        raise DevServerError(
            f"port {port} is already in use, so Plone cannot listen on "
            f"http://localhost:{port}. Stop the program that uses it, or pick "
            f"another port: `make run PORT={port + 1}`"
        )
    broker_env, broker = choose_broker()
    env = dict(os.environ, **broker_env, DEVSERVER_BIN=str(BIN))
    # The worker's own check: jobs (and credentials) go only to this Plone.
    env.setdefault(
        "ASYNC_ALLOWED_ORIGINS", f"http://localhost:{port},http://127.0.0.1:{port}"
    )

    password, new_password = admin_password()
    write_instance(port)
    if new_password or not SITE_MARKER.exists() or not DATA_FS.exists():
        create_site(env)

    if port_in_use(port):  # taken while the site was being created
        raise DevServerError(f"port {port} was taken meanwhile: try again")
    SOCKET.unlink(missing_ok=True)  # left by a supervisord that was killed

    base = f"http://localhost:{port}"
    private = broker_env["DEVSERVER_REDIS_AUTOSTART"] == "true"
    say(f"starting {'a private Redis, ' if private else ''}Plone and the "
        f"Celery worker with supervisor.cfg; broker {broker}")
    process = subprocess.Popen(
        [str(BIN / "supervisord"), "-n", "-c", str(CONFIG)], cwd=ROOT, env=env
    )

    # Ctrl-C reaches supervisord from the terminal (it is in our process
    # group); a signal sent to this process only is passed on. supervisord
    # then stops every program and exits, and so do we.
    def forward(signum, frame):
        try:
            process.send_signal(signal.SIGTERM if signum == signal.SIGHUP
                                else signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)

    problem = wait_until_up(process, port)
    if problem and process.poll() is None:
        say(f"\nmake run: error: {problem}\n\nstopping everything ...")
        try:
            supervisor().supervisor.shutdown()
        except (OSError, xmlrpc.client.Error):
            process.terminate()
        process.wait()
        return 1
    if problem:
        say(f"\nmake run: error: {problem}")
        return 1

    say(f"""
Plone is up (Ctrl-C here or `make stop` in another terminal stops everything):
    site           {base}/{SITE_ID}
    login          {ADMIN} / {password}   (kept in {relative(PASSWORD_FILE)})
    async status   {base}/{SITE_ID}/@@async-status
    Zope root      {base}/manage
    broker         {broker}
    logs           {relative(LOG)}/plone.log, worker.log, access.log, supervisord.log
""")
    while True:
        try:
            return process.wait()
        except InterruptedError:  # pragma: no cover (PEP 475 retries)
            continue


# --- stop --------------------------------------------------------------------


def stop(args):
    pid = running_supervisord_pid()
    stopped_something = False
    if pid:
        say(f"stopping supervisord (pid {pid}) and its programs ...")
        try:
            supervisor().supervisor.shutdown()
        except (OSError, xmlrpc.client.Error):
            os.kill(pid, signal.SIGTERM)
        # The programs' stopwaitsecs add up to 50 s at worst.
        if not wait_gone(pid, "supervisord", 90):
            raise DevServerError(
                f"supervisord (pid {pid}) did not stop in 90 s: look at "
                f"{relative(LOG / 'supervisord.log')}, then `kill {pid}`"
            )
        stopped_something = True
    else:
        pid = read_pid(SUPERVISORD_PID)
        if pid and pid_alive(pid, "supervisord"):
            say(f"supervisord (pid {pid}) does not answer on its socket: "
                "sending it SIGTERM")
            os.kill(pid, signal.SIGTERM)
            if not wait_gone(pid, "supervisord", 90):
                raise DevServerError(
                    f"supervisord (pid {pid}) did not stop in 90 s: `kill {pid}`"
                )
            stopped_something = True
    if kill_leftovers():
        stopped_something = True
    for stale in (SOCKET, SUPERVISORD_PID):  # left by a killed supervisord
        stale.unlink(missing_ok=True)
    say("stopped" if stopped_something else "nothing to stop: `make run` is "
        "not running here")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Start (run) or stop the development Plone, Celery "
        "worker and Redis of ploneintranet.asynctasks."
    )
    parser.add_argument("command", choices=["run", "stop"])
    args = parser.parse_args(argv)
    try:
        return {"run": run, "stop": stop}[args.command](args)
    except DevServerError as e:
        print(f"make {args.command}: error: {e}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
