"""Kill Celery workers with SIGKILL while they run jobs; count what is lost.

    .venv/bin/python scripts/kill_workers.py [--jobs 20000] [--kills 40] [--broker redis]

``--broker`` is ``redis`` (a private redis-server, the default), ``sentinel``
(a private master, replica and three sentinels), ``rabbitmq`` (a private
vhost on this machine's RabbitMQ, results in a private redis-server), or the
url of a broker of your own (with ``--results`` and ``--transport-options``
where it needs them; its queues get the test's jobs). A Celery worker of
this package runs against it; ``--jobs`` jobs of ``celerytasks.post`` go to
a small HTTP server in this process that counts the jobs it receives, then
``--kills`` times the worker (its pool included) is SIGKILLed at a random
moment and a new one started. At the end it prints how many jobs arrived,
how many arrived twice, how many the ledger sent again ("vanished from the
queues"), and exits 1 if any job is missing.

Before the ledger, a run of 20,000 jobs and 25 kills on Redis lost 6 of them.
Takes a few minutes; not part of ``make test`` (docs/reliability.rst).
"""

import argparse
import json
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
#: The brokers this script starts itself, by the layer of testing.py that does.
PRIVATE = {"redis": "RedisServerLayer", "sentinel": "RedisSentinelLayer", "rabbitmq": "RabbitMQLayer"}


def connect(testing, options):
    """Point the Celery app at the broker of ``options``; return ``(broker
    url, the worker's settings, a function that stops what was started)``."""
    if options.broker in PRIVATE:
        layer = getattr(testing, PRIVATE[options.broker])(name=f"kill_workers:{options.broker}")
        layer.setUp()
        return layer["broker_url"], layer["celery_environ"], layer.tearDown
    transport_options = json.loads(options.transport_options or "{}")
    saved = testing.point_celery_app_at(options.broker, options.results, transport_options)
    environ = {"BROKER_TRANSPORT_OPTIONS": json.dumps(transport_options)}
    if options.results:
        environ["CELERY_RESULT_BACKEND"] = options.results
    return options.broker, environ, lambda: testing.restore_celery_app(saved)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--broker", default="redis", help="redis, sentinel, rabbitmq or a broker url")
    parser.add_argument("--results", help="result backend of a broker url (a Redis with RabbitMQ)")
    parser.add_argument("--transport-options", help='JSON, e.g. {"master_name": "mymaster"}')
    options = parser.parse_args()
    os.environ.update(SETTINGS)
    from ploneintranet.asynctasks import celerytasks
    from ploneintranet.asynctasks import testing

    directory = tempfile.mkdtemp(prefix="asynctasks-kill-")
    counter = testing.CountingJobServer()
    url, environ, disconnect = connect(testing, options)
    environ = {**SETTINGS, **environ}
    worker = None
    try:
        target = counter.url
        worker = testing.start_celery_worker(url, directory, "kill-0", **environ)
        print(f"queueing {options.jobs} jobs on {options.broker} ...", flush=True)
        started = time.monotonic()
        for number in range(options.jobs):
            celerytasks.post.apply_async((target, {"key": str(number)}, {}, {}), ignore_result=True)
        print(f"queued in {time.monotonic() - started:.1f} s", flush=True)
        for kill in range(1, options.kills + 1):
            time.sleep(random.uniform(0.1, 0.6))
            testing.stop_process(worker, signal.SIGKILL)
            worker = testing.start_celery_worker(url, directory, f"kill-{kill}", **environ)
        print(f"killed the worker {options.kills} times; waiting for the rest ...", flush=True)
        keys = {str(number) for number in range(options.jobs)}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not keys <= set(counter.posts):
            time.sleep(1)
        logs = "".join(path.read_text(errors="replace") for path in Path(directory).glob("kill-*.log"))
        arrived = keys & set(counter.posts)
        others = sorted(set(counter.posts) - keys)
        print(
            f"{options.broker}: jobs arrived: {len(arrived)} of {options.jobs}; "
            f"missing: {len(keys - arrived)}; "
            f"arrived twice or more: {sum(1 for key in arrived if counter.posts[key] > 1)}; "
            f"sent again by the ledger: {logs.count('vanished from the queues')}; "
            f"{time.monotonic() - started:.0f} s" + (f"; POSTs of no job of this run: {others[:5]}" if others else "")
        )
        return 1 if keys - arrived else 0
    finally:
        if worker is not None:
            testing.stop_process(worker)
        disconnect()
        counter.close()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
