"""Start, watch and stop the supervisord of ``make run`` and ``make run-zeo``.

Both topologies run under one supervisord with the socket
``var/supervisor.sock``, so only one of them runs at a time and ``make stop``
stops whichever it is. Each program writes a pid file under ``var/``: with
them, programs left over by a supervisord that was killed are found and ended.

Only the standard library and supervisor are used.
"""

import os
from pathlib import Path
import signal
import subprocess
import time
import urllib.error
import urllib.request
import xmlrpc.client


ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
LOG = VAR / "log"
CONFIG = ROOT / "supervisor.cfg"
SOCKET = VAR / "supervisor.sock"
SUPERVISORD_PID = VAR / "supervisord.pid"
STARTUP_TIMEOUT = 300  # seconds to wait for Plone to answer

# Pid files written by the programs of supervisor.cfg, with a word their
# command line must contain and the signal that stops them cleanly. In the
# order they are stopped: the users of a service before the service.
PROGRAM_PIDS = {
    "flower": (VAR / "flower.pid", "flower", signal.SIGTERM),
    "push": (VAR / "push.pid", "asynctasks-push", signal.SIGTERM),
    "celery-high": (VAR / "celery-high.pid", "celery", signal.SIGTERM),
    "celery-low": (VAR / "celery-low.pid", "celery", signal.SIGTERM),
    "celery-default": (VAR / "celery-default.pid", "celery", signal.SIGTERM),
    "worker": (VAR / "worker.pid", "celery", signal.SIGTERM),
    "haproxy": (VAR / "haproxy.pid", "haproxy", signal.SIGTERM),
    # SIGINT makes runwsgi close the ZODB cleanly.
    "plone-frontend": (VAR / "plone-frontend.pid", "runwsgi", signal.SIGINT),
    "plone-worker": (VAR / "plone-worker.pid", "runwsgi", signal.SIGINT),
    "plone": (VAR / "plone.pid", "runwsgi", signal.SIGINT),
    "zeo": (VAR / "zeo.pid", "runzeo", signal.SIGTERM),
    "redis": (VAR / "redis.pid", "redis-server", signal.SIGTERM),
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


def tail(path, lines=25):
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


# --- processes ---------------------------------------------------------------


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


def wait_gone(pid, word, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid, word):
            return True
        time.sleep(0.2)
    return not pid_alive(pid, word)


def leftover_programs():
    """Return ``{name: pid}`` of programs of ours that are still running."""
    found = {}
    for name, (pidfile, word, _sig) in PROGRAM_PIDS.items():
        pid = read_pid(pidfile)
        if pid and pid_alive(pid, word):
            found[name] = pid
    return found


def _signal_program(pid, sig):
    # supervisord gave each program its own process group: Celery's pool
    # processes are in the worker's group, HAProxy's worker in its master's.
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def kill_leftovers():
    """End programs left over by a supervisord that died; return their names."""
    leftovers = leftover_programs()
    for name, pid in leftovers.items():
        _pidfile, word, sig = PROGRAM_PIDS[name]
        say(f"stopping the {name} left over from an earlier run (pid {pid})")
        _signal_program(pid, sig)
        if not wait_gone(pid, word, 30):
            say(f"  {name} (pid {pid}) did not stop in 30 s: killing it")
            _signal_program(pid, signal.SIGKILL)
            wait_gone(pid, word, 5)
    return list(leftovers)


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


def refuse_if_running(command):
    """Raise :class:`DevServerError` if a stack of ours is still running."""
    pid = running_supervisord_pid()
    if pid:
        raise DevServerError(
            f"`make run` or `make run-zeo` is already running here (supervisord "
            f"pid {pid}): stop it with Ctrl-C in its terminal or with `make stop`"
        )
    leftovers = leftover_programs()
    if leftovers:
        names = ", ".join(f"{name} (pid {p})" for name, p in leftovers.items())
        raise DevServerError(
            f"programs of an earlier `make {command}` are still running: {names}. Run `make stop` first"
        )


def start_supervisord(env):
    """Run ``supervisord -n -c supervisor.cfg`` with ``env``; return the process.

    Ctrl-C reaches supervisord from the terminal (it is in our process group);
    a signal sent to this process only is passed on. supervisord then stops
    every program and exits, and so do we.
    """
    SOCKET.unlink(missing_ok=True)  # left by a supervisord that was killed
    bin_dir = Path(env["DEVSERVER_BIN"])
    process = subprocess.Popen([str(bin_dir / "supervisord"), "-n", "-c", str(CONFIG)], cwd=ROOT, env=env)

    def forward(signum, frame):
        try:
            process.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    return process


def http_answers(port):
    """Does Zope answer on 127.0.0.1:``port``, directly or through HAProxy?"""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5):
            return True
    except urllib.error.HTTPError as error:
        # 401, 404...: Zope answered; 502-504: HAProxy did, Zope is not up yet.
        return error.code not in (502, 503, 504)
    except (OSError, ValueError):
        return False


def wait_until_up(process, ports):
    """Wait until supervisord runs every program and each of ``ports``
    answers HTTP. Return ``None`` when up, else what went wrong."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"supervisord exited (status {process.returncode}):\n" + tail(LOG / "supervisord.log")
        try:
            infos = supervisor().supervisor.getAllProcessInfo()
        except (OSError, xmlrpc.client.Error):
            time.sleep(0.5)
            continue
        for info in infos:
            if info["statename"] in ("FATAL", "EXITED"):
                log = info["stderr_logfile"] or info["stdout_logfile"] or LOG / "supervisord.log"
                return (
                    f"{info['name']} {info['statename']}: "
                    f"{info['spawnerr'] or info['description']}; "
                    f"the end of {relative(log)}:\n" + tail(log)
                )
        # Programs of the other topology stay STOPPED (autostart false).
        if all(info["statename"] in ("RUNNING", "STOPPED") for info in infos) and all(
            http_answers(port) for port in ports
        ):
            return None
        time.sleep(1)
    return (
        f"Plone did not answer on port(s) {', '.join(map(str, ports))} in "
        f"{STARTUP_TIMEOUT} s; see the logs in {relative(LOG)}/"
    )


def shut_down(process):
    """Ask supervisord to stop everything and wait until it has."""
    try:
        supervisor().supervisor.shutdown()
    except (OSError, xmlrpc.client.Error):
        process.terminate()
    process.wait()


def wait_for_supervisord(process):
    """Wait until supervisord exits (Ctrl-C, `make stop`); return its status."""
    while True:
        try:
            return process.wait()
        except InterruptedError:  # pragma: no cover (PEP 475 retries)
            continue


def stop():
    """Stop our supervisord and any leftover program; return True if there
    was something to stop."""
    pid = running_supervisord_pid()
    stopped_something = False
    if pid:
        say(f"stopping supervisord (pid {pid}) and its programs ...")
        try:
            supervisor().supervisor.shutdown()
        except (OSError, xmlrpc.client.Error):
            os.kill(pid, signal.SIGTERM)
        # The programs' stopwaitsecs add up to about 90 s at worst.
        if not wait_gone(pid, "supervisord", 120):
            raise DevServerError(
                f"supervisord (pid {pid}) did not stop in 120 s: look at "
                f"{relative(LOG / 'supervisord.log')}, then `kill {pid}`"
            )
        stopped_something = True
    else:
        pid = read_pid(SUPERVISORD_PID)
        if pid and pid_alive(pid, "supervisord"):
            say(f"supervisord (pid {pid}) does not answer on its socket: sending it SIGTERM")
            os.kill(pid, signal.SIGTERM)
            if not wait_gone(pid, "supervisord", 120):
                raise DevServerError(f"supervisord (pid {pid}) did not stop in 120 s: `kill {pid}`")
            stopped_something = True
    if kill_leftovers():
        stopped_something = True
    for stale in (SOCKET, SUPERVISORD_PID):  # left by a killed supervisord
        stale.unlink(missing_ok=True)
    # HAProxy and Flower's shell do not remove their pid files.
    for pidfile, word, _sig in PROGRAM_PIDS.values():
        pid = read_pid(pidfile)
        if pid is None or not pid_alive(pid, word):
            pidfile.unlink(missing_ok=True)
    return stopped_something
