"""The development servers behind ``make run``, ``make run-zeo`` and ``make stop``.

``python scripts/devserver.py run``: the quick single-instance stack. One
Plone instance on its own FileStorage (env ``PORT``, default 8080), one
Celery worker that consumes every queue, and the Redis that answers at
``BROKER_URL`` (default ``redis://localhost:6379/0``), else, when
``BROKER_URL`` is not set, a private ``redis-server`` with its data in
``var/redis/``.

``python scripts/devserver.py run-zeo``: the production-like server, on
``PORT`` and the four ports after it:

=============  ==========  ==================================================
program        port        role
=============  ==========  ==================================================
haproxy        PORT        the address of the site: user traffic to
                           plone-frontend, jobs (``X-celery-task-name``) to
                           plone-worker (etc/haproxy.cfg)
plone-frontend PORT + 1    the Plone instance that serves users
plone-worker   PORT + 2    the Plone instance that does the jobs
zeo            PORT + 3    the ZEO server, sharing the ZODB of ``make run``
flower         PORT + 4    Flower, the Celery dashboard (if installed)
push           PORT + 5    the websocket push server (``make run`` too)
celery-high    -           the Celery worker of the queue ``high``
celery-low     -           the Celery worker of the queue ``low``
celery-default -           the Celery worker of the default queue ``celery``
=============  ==========  ==================================================

Redis is not started: as in production it is a service of the system, and
``run-zeo`` stops with instructions if none answers at ``BROKER_URL``.

With ``RELSTORAGE_DSN`` (libpq's form, e.g. ``host=127.0.0.1 user=postgres
dbname=plone``; the database must exist, RelStorage makes its tables) the
instances share a RelStorage in that PostgreSQL database instead, and no ZEO
server runs: ``make run-zeo RELSTORAGE_DSN="..."``.

Both commands:

1. refuse to start if either stack is running, or if a port is taken;
2. on first run, write an admin password to ``var/admin-password`` (0600)
   and create the Plone site ``Plone`` with ``scripts/create_site.py``;
3. write the Zope (and ZEO) configuration to ``var/etc/`` (every run, so
   moving the checkout or changing ``PORT`` just works);
4. run ``supervisord -n -c supervisor.cfg``, which starts the programs of
   their topology, wait until they are up and print the URLs and the login.
   Ctrl-C stops everything.

``python scripts/devserver.py stop`` stops either: it asks supervisord to
shut down, waits until it is gone, and ends any program left over from a
supervisord that was killed.

Only the standard library, supervisor and redis (all in the virtualenv) are
used; the helpers live next to this file in supervise.py (supervisord and pid
files), preflight.py (checks) and zopeconfig.py (Zope and ZEO files).
"""

import argparse
import os
from pathlib import Path
import preflight
import secrets
import subprocess
import supervise
from supervise import LOG
from supervise import ROOT
from supervise import VAR
from supervise import DevServerError
from supervise import relative
from supervise import say
import sys
import zopeconfig


PASSWORD_FILE = VAR / "admin-password"
SITE_MARKER = VAR / "site-created"
DATA_FS = VAR / "filestorage" / "Data.fs"
# Not resolved: in a virtualenv, bin/python is a symlink to the system one.
BIN = Path(sys.executable).parent

ADMIN = "admin"
SITE_ID = "Plone"
#: The queues that the Celery workers of run-zeo consume (see supervisor.cfg).
ZEO_QUEUES = ("celery", "high", "low")


# --- the site ------------------------------------------------------------------


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
            raise DevServerError(f"{relative(PASSWORD_FILE)} is empty: remove it, and `make run` makes a new password")
        return password, False
    password = secrets.token_urlsafe(18)
    fd = os.open(PASSWORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(password + "\n")
    return password, True


def ensure_site(env, port, dsn=None):
    """Create the site with scripts/create_site.py unless it was made (with
    this password). It opens the FileStorage itself, before any server runs,
    or the RelStorage in the PostgreSQL database ``dsn``."""
    password, new_password = admin_password()
    if dsn:
        zopeconfig.write_relstorage_instance(VAR, "plone", port, dsn, conf="zope")
        made = SITE_MARKER.exists() and SITE_MARKER.read_text().startswith(f"{dsn}\n")
        where = f"RelStorage ({dsn})"
    else:
        zopeconfig.write_single_instance(VAR, port)
        made = SITE_MARKER.exists() and DATA_FS.exists() and SITE_MARKER.read_text().startswith(SITE_ID)
        where = relative(DATA_FS)
    if made and not new_password:
        return password
    say(f"creating the Plone site {SITE_ID!r} in {where} (first run, takes a minute) ...")
    SITE_MARKER.unlink(missing_ok=True)
    result = subprocess.run(
        [
            str(BIN / "python"),
            str(ROOT / "scripts" / "create_site.py"),
            str(VAR / "etc" / "zope.conf"),
            str(PASSWORD_FILE),
        ],
        cwd=ROOT,
        env=env,
    )
    if result.returncode != 0:
        raise DevServerError(
            "creating the Plone site failed (see the messages above). Fix the "
            "cause and try again; to start from scratch, remove var/"
        )
    SITE_MARKER.write_text(
        (f"{dsn}\n" if dsn else "") + f"{SITE_ID} created by scripts/create_site.py; remove this file and "
        "the next start checks the site and the admin user again.\n"
    )
    return password


# --- the environment of supervisor.cfg ----------------------------------------


def supervisor_environment(topology, broker_env, origin, **extra):
    """Return the environment of supervisord for ``topology`` (``single`` or
    ``zeo``). supervisor.cfg expands every ``%(ENV_...)s`` it names, in the
    programs of both topologies, so all of them are set."""
    env = dict(os.environ, **broker_env)
    env.update(
        DEVSERVER_BIN=str(BIN),
        DEVSERVER_SINGLE="true" if topology == "single" else "false",
        DEVSERVER_ZEO="true" if topology == "zeo" else "false",
        DEVSERVER_ZEO_SERVER="true" if topology == "zeo" else "false",
        DEVSERVER_FLOWER="false",
        DEVSERVER_FLOWER_PORT="5555",
        DEVSERVER_HAPROXY="haproxy",
    )
    env.update(extra)
    # The worker's own check: jobs (and credentials) go only to this site.
    env.setdefault(
        "ASYNC_ALLOWED_ORIGINS",
        f"http://localhost:{origin},http://127.0.0.1:{origin}",
    )
    # The push server: sockets of this site's pages, authenticated by it.
    env.setdefault("ASYNC_PUSH_PORT", str(push_port(origin)))
    env.setdefault("ASYNC_PUSH_PLONE_URL", f"http://127.0.0.1:{origin}/{SITE_ID}")
    env.setdefault(
        "ASYNC_PUSH_ALLOWED_ORIGINS",
        f"http://localhost:{origin},http://127.0.0.1:{origin}",
    )
    return env


def push_port(port):
    """The push server's port: after the four that run-zeo takes after PORT."""
    return port + 5


def serve(command, env, ports, banner):
    """Run supervisord, wait until ``ports`` answer, print ``banner`` and
    wait for the end; return the exit status."""
    process = supervise.start_supervisord(env)
    problem = supervise.wait_until_up(process, ports)
    if problem and process.poll() is None:
        say(f"\nmake {command}: error: {problem}\n\nstopping everything ...")
        supervise.shut_down(process)
        return 1
    if problem:
        say(f"\nmake {command}: error: {problem}")
        return 1
    say(banner)
    return supervise.wait_for_supervisord(process)


# --- commands --------------------------------------------------------------


def run(args):
    supervise.refuse_if_running("run")
    port = preflight.http_port("run", span=5)
    preflight.require_free_ports("run", {"Plone": port, "push": push_port(port)})
    broker_env, broker = preflight.choose_broker()
    env = supervisor_environment("single", broker_env, port)
    password = ensure_site(env, port)
    preflight.require_free_ports("run", {"Plone": port})  # taken meanwhile?

    private = broker_env["DEVSERVER_REDIS_AUTOSTART"] == "true"
    say(
        f"starting {'a private Redis, ' if private else ''}Plone and the "
        f"Celery worker with supervisor.cfg; broker {broker}"
    )
    base = f"http://localhost:{port}"
    return serve(
        "run",
        env,
        [port],
        f"""
Plone is up (Ctrl-C here or `make stop` in another terminal stops everything):
    site           {base}/{SITE_ID}
    login          {ADMIN} / {password}   (kept in {relative(PASSWORD_FILE)})
    async status   {base}/{SITE_ID}/@@async-status
    push server    ws://localhost:{push_port(port)}/push
    Zope root      {base}/manage
    broker         {broker}
    logs           {relative(LOG)}/plone.log, worker.log, access.log, supervisord.log
""",
    )


def run_zeo(args):
    supervise.refuse_if_running("run-zeo")
    port = preflight.http_port("run-zeo", span=5)
    ports = {
        "HAProxy": port,
        "plone-frontend": port + 1,
        "plone-worker": port + 2,
        "ZEO": port + 3,
        "Flower": port + 4,
        "push": push_port(port),
    }
    preflight.require_free_ports("run-zeo", ports)
    haproxy = preflight.require_haproxy()
    broker_env, broker = preflight.require_system_redis()
    preflight.require_consumed_queues(ZEO_QUEUES)
    flower = preflight.flower_installed()
    zeo_address = f"127.0.0.1:{ports['ZEO']}"
    # RELSTORAGE_DSN: the instances share a RelStorage in PostgreSQL, no ZEO.
    dsn = os.environ.get("RELSTORAGE_DSN", "").strip()
    env = supervisor_environment(
        "zeo",
        broker_env,
        port,
        DEVSERVER_ZEO_SERVER="false" if dsn else "true",
        DEVSERVER_HAPROXY=haproxy,
        DEVSERVER_FLOWER="true" if flower else "false",
        DEVSERVER_FLOWER_PORT=str(ports["Flower"]),
        # Read by etc/haproxy.cfg.
        HAPROXY_BIND=f"127.0.0.1:{port}",
        PLONE_FRONTEND=f"127.0.0.1:{ports['plone-frontend']}",
        PLONE_WORKER=f"127.0.0.1:{ports['plone-worker']}",
        PLONE_WORKER_LOW=f"127.0.0.1:{ports['plone-worker']}",
    )
    password = ensure_site(env, port, dsn)
    if dsn:
        for name in ("plone-frontend", "plone-worker"):
            zopeconfig.write_relstorage_instance(VAR, name, ports[name], dsn)
        database = f"RelStorage ({dsn})"
    else:
        zopeconfig.write_zeo_server(VAR, zeo_address)
        for name in ("plone-frontend", "plone-worker"):
            zopeconfig.write_zeo_instance(VAR, name, ports[name], zeo_address)
        database = zeo_address
    preflight.require_free_ports("run-zeo", ports)  # taken meanwhile?

    say(
        f"starting {'' if dsn else 'ZEO, '}two Plone instances, HAProxy and Celery workers for the "
        f"queues {', '.join(ZEO_QUEUES)} with supervisor.cfg; broker {broker}"
    )
    base = f"http://localhost:{port}"
    dashboard = f"http://localhost:{ports['Flower']}" if flower else "not installed: pip install flower"
    return serve(
        "run-zeo",
        env,
        [port, ports["plone-frontend"], ports["plone-worker"]],
        f"""
The production-like server is up (Ctrl-C here or `make stop` stops everything):
    site           {base}/{SITE_ID}   (HAProxy: users to plone-frontend, jobs to plone-worker)
    login          {ADMIN} / {password}   (kept in {relative(PASSWORD_FILE)})
    async status   {base}/{SITE_ID}/@@async-status
    plone-frontend http://localhost:{ports["plone-frontend"]}/{SITE_ID}
    plone-worker   http://localhost:{ports["plone-worker"]}/{SITE_ID}
    push server    ws://localhost:{ports["push"]}/push
    database       {database}
    Flower         {dashboard}
    broker         {broker}
    logs           {relative(LOG)}/ (one per program; plone-*-access.log per instance)
""",
    )


def stop(args):
    stopped = supervise.stop()
    say("stopped" if stopped else "nothing to stop: neither `make run` nor `make run-zeo` is running here")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Start (run, run-zeo) or stop the development servers of ploneintranet.asynctasks."
    )
    parser.add_argument("command", choices=["run", "run-zeo", "stop"])
    args = parser.parse_args(argv)
    commands = {"run": run, "run-zeo": run_zeo, "stop": stop}
    try:
        return commands[args.command](args)
    except DevServerError as e:
        print(f"make {args.command}: error: {e}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
