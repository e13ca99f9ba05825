"""Kill Celery workers with SIGKILL while they run jobs; count what is lost.

    .venv/bin/python scripts/kill_workers.py [--jobs 20000] [--kills 40]

Starts a private redis-server and a Celery worker of this package, queues
``--jobs`` jobs of ``celerytasks.post`` to a small HTTP server in this process
that counts the jobs it receives, then ``--kills`` times SIGKILLs the worker
(its pool included) at a random moment and starts a new one. At the end it
prints how many jobs arrived, how many arrived twice, how many the ledger
sent again ("vanished from the queues"), and exits 1 if any job is missing.

Before the ledger, a run of 20,000 jobs and 25 kills lost 6 of them. Takes a
few minutes; not part of ``make test`` (docs/reliability.rst).
"""

import argparse
import os
from pathlib import Path
import random
import shutil
import signal
import sys
import tempfile
import time


# Settings of this run's worker and of this process, before the package loads.
SETTINGS = {"ASYNC_VISIBILITY_TIMEOUT": "5", "ASYNC_SWEEP_INTERVAL": "2"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--kills", type=int, default=40)
    options = parser.parse_args()
    os.environ.update(SETTINGS)
    from ploneintranet.asynctasks import celerytasks
    from ploneintranet.asynctasks import testing

    directory = tempfile.mkdtemp(prefix="asynctasks-kill-")
    port = testing.free_port()
    redis_server = testing.start_redis_server(port, directory)
    counter = testing.CountingJobServer()
    worker = None
    try:
        url = f"redis://127.0.0.1:{port}/0"
        testing.point_celery_app_at(url, url)
        target = counter.url
        worker = testing.start_celery_worker(url, directory, "kill-0", **SETTINGS)
        print(f"queueing {options.jobs} jobs ...", flush=True)
        for number in range(options.jobs):
            celerytasks.post.apply_async((target, {"key": str(number)}, {}, {}), ignore_result=True)
        for kill in range(1, options.kills + 1):
            time.sleep(random.uniform(0.1, 0.6))
            testing.stop_process(worker, signal.SIGKILL)
            worker = testing.start_celery_worker(url, directory, f"kill-{kill}", **SETTINGS)
        print(f"killed the worker {options.kills} times; waiting for the rest ...", flush=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(counter.posts) < options.jobs:
            time.sleep(1)
        logs = "".join(path.read_text(errors="replace") for path in Path(directory).glob("kill-*.log"))
        missing = options.jobs - len(counter.posts)
        print(
            f"jobs arrived: {len(counter.posts)} of {options.jobs}; missing: {missing}; "
            f"arrived twice or more: {sum(1 for n in counter.posts.values() if n > 1)}; "
            f"sent again by the ledger: {logs.count('vanished from the queues')}"
        )
        return 1 if missing else 0
    finally:
        if worker is not None:
            testing.stop_process(worker)
        testing.stop_process(redis_server)
        counter.close()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
