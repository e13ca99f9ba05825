"""The fault matrix: the whole topology under steady saves, one fault at a time.

    .venv/bin/python scripts/fault_matrix.py [--databases zeo,relstorage] [--faults ...]

Run by ``make faults`` (and so by CI), from the checkout's root. For each
database (``zeo``: a ZEO server; ``relstorage``: RelStorage in a PostgreSQL
cluster of its own, made with ``initdb`` on a free port and removed
afterwards) it starts, each a real process on a free loopback port: a
redis-server that keeps its data on disk (append-only file, as a production
broker does), two Celery workers, the two Plone instances of ``make run-zeo``
(``plone-frontend`` and ``plone-worker``) on that database, and HAProxy with
etc/haproxy.cfg in front, which sends jobs (by their ``X-celery-task-name``
header) to ``plone-worker`` and, while that one is down, to its backup,
``plone-frontend`` (the layers of tests/test_routing.py).

A client logs in through Plone's login form as a Contributor and saves,
one after the other, new Images through Plone's add form (``++add++Image``),
as an editor's browser does. Each save queues one job,
:class:`~ploneintranet.asynctasks.tasks.GeneratePreview`, whose effect is
the item's preview (``ready`` in ``@@async-preview-snippet``). While the
client saves, one fault:

- ``worker-instance``: SIGKILL the Plone instance that does the jobs; it is
  started again after 10 s. Jobs go to the frontend meanwhile.
- ``broker``: stop Redis for 30 s (SIGTERM; it keeps its data). Saves keep
  their jobs in the site's outbox, sent once Redis answers again.
- ``celery-worker``: SIGKILL one Celery worker (pool included); a new one
  starts after 5 s.
- ``database``: restart the database server: stop the ZEO server (SIGTERM)
  or the PostgreSQL cluster (``pg_ctl stop -m fast``) and start it again.

Then the client stops and the run waits (at most ``--drain`` seconds) until
every save's preview is there. It counts, per run: the saves that committed
(the add form answered with the new item; each queued one job), the jobs
whose effect is read back from the database (the item's preview is ready,
asked of plone-frontend directly), the jobs run twice (more than one POST to
the item's ``@@async-generate-preview`` answered 200 in the instances'
access logs), the saves refused (any other answer, or none), the jobs
plone-frontend kept in the site's outbox (its log), and the jobs that
plone-frontend did (its access log: HAProxy's backup for jobs). Making a
preview is idempotent: a second run makes the same image scale again.

Prints the table; exits 1 if a job is lost or a save refused. About 6
minutes on a 2-core machine for both databases (docs/deployment.rst).
"""

import argparse
import os
from pathlib import Path
import sys


# Settings of the Plone instances and Celery workers of this run (they
# inherit this environment), before the package loads: a job held by a killed
# worker goes back to Redis after 10 s, the ledger looks for lost jobs every 2 s.
os.environ.update(ASYNC_VISIBILITY_TIMEOUT="10", ASYNC_SWEEP_INTERVAL="2")

from fault_topology import DATABASES  # noqa: E402
from fault_topology import FAULTS  # noqa: E402
from fault_topology import run_matrix  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--databases", default=",".join(DATABASES), help="comma-separated: zeo, relstorage")
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma-separated: " + ", ".join(FAULTS))
    parser.add_argument("--broker-down", type=float, default=30, help="seconds Redis is stopped (30)")
    parser.add_argument("--drain", type=float, default=180, help="seconds to wait for the last jobs (180)")
    options = parser.parse_args()
    databases = [name.strip() for name in options.databases.split(",") if name.strip()]
    faults = [name.strip() for name in options.faults.split(",") if name.strip()]
    for name in databases:
        if name not in DATABASES:
            parser.error(f"unknown database {name!r}: choose from {', '.join(DATABASES)}")
    for name in faults:
        if name not in FAULTS:
            parser.error(f"unknown fault {name!r}: choose from {', '.join(FAULTS)}")
    if not (Path.cwd() / "etc" / "haproxy.cfg").exists():
        parser.error("run it in the checkout's root (make faults): it needs etc/haproxy.cfg and scripts/")
    rows = run_matrix(databases, faults, broker_down=options.broker_down, drain=options.drain)
    return 1 if any(row.failed for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
