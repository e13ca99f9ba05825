"""The real processes the benchmark measures, all under one temp directory.

:class:`BenchStack` starts a private broker (:data:`BROKERS`: a
``redis-server``, a Sentinel setup or a vhost on this machine's RabbitMQ,
each by the layer ``make test`` uses for it), builds a Plone site on
a FileStorage with the checkout's scripts/zopeconfig.py and create_site.py
(through :mod:`~asynctasks_benchmarks.site`), serves it with ``runwsgi``
as ``make run`` does, plus this package's views, and starts one Celery worker
per :class:`WorkerSettings`. Leaving the ``with`` block stops them all, also
after an error or Ctrl-C.
"""

from asynctasks_benchmarks import site
from asynctasks_benchmarks.jobs import DEFAULT_QUEUE
from asynctasks_benchmarks.jobs import NAIVE_QUEUE
from asynctasks_benchmarks.jobs import PARKED_QUEUE
import contextlib
from dataclasses import dataclass
import json
import os
from pathlib import Path
from ploneintranet.asynctasks import ledger
from ploneintranet.asynctasks.broker import client_for
from ploneintranet.asynctasks.celerytasks import app
from ploneintranet.asynctasks.testing import RabbitMQLayer
from ploneintranet.asynctasks.testing import RedisSentinelLayer
from ploneintranet.asynctasks.testing import RedisServerLayer
from ploneintranet.asynctasks.testing import free_port
from ploneintranet.asynctasks.testing import log_tail
from ploneintranet.asynctasks.testing import stop_process
from ploneintranet.asynctasks.testing import wait_until
import requests
import secrets
import signal
import subprocess
import sys


BIN = Path(sys.executable).parent

#: ``--broker``: the private broker of each kind, as ``make test`` sets it up
#: (the layers of :mod:`ploneintranet.asynctasks.testing`): a redis-server of
#: its own; a master, a replica and three sentinels of their own; a vhost of
#: its own on this machine's RabbitMQ (127.0.0.1:5672, created and deleted),
#: with the results in a redis-server of its own.
BROKERS = {
    "redis": RedisServerLayer,
    "sentinel": RedisSentinelLayer,
    "rabbitmq": RabbitMQLayer,
}


@dataclass(frozen=True)
class WorkerSettings:
    """How one Celery worker is started; ``queues`` are the queues it consumes."""

    name: str
    queues: tuple
    pool: str = "prefork"
    concurrency: int = 2
    prefetch_multiplier: int = 1

    def describe(self):
        return (
            f"-P {self.pool} -c {self.concurrency} --prefetch-multiplier "
            f"{self.prefetch_multiplier} -Q {','.join(self.queues)}"
        )


#: The recommended settings (docs/benchmarks.rst); it consumes the real queues.
TUNED_WORKER = WorkerSettings("tuned", ("celery", "high"), "threads", 8, 4)
#: The package's defaults, as ``make run`` starts a worker.
DEFAULT_WORKER = WorkerSettings("default", (DEFAULT_QUEUE,))
#: The default settings again, for the naive task.
NAIVE_WORKER = WorkerSettings("naive", (NAIVE_QUEUE,))


def _process_tree(pid):
    """``pid`` and its descendants (Linux /proc)."""
    pending, found = [pid], []
    while pending:
        current = pending.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text()
        except OSError:
            continue
        found.append(current)
        pending.extend(int(child) for child in children.split())
    return found


def process_tree_rss(pid):
    """Resident memory in bytes of ``pid`` and its child processes."""
    total = 0
    for current in _process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def process_tree_cpu(pid):
    """CPU seconds (user and system) used so far by ``pid`` and its children."""
    ticks = 0
    for current in _process_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


class BenchStack:
    """A private broker (``broker``, one of :data:`BROKERS`), a Plone
    instance on a FileStorage and Celery workers, under ``directory``;
    ``checkout`` is the git checkout whose scripts/ configure and build the
    site."""

    def __init__(self, directory, checkout, workers=(TUNED_WORKER, DEFAULT_WORKER, NAIVE_WORKER), broker="redis"):
        if broker not in BROKERS:
            raise ValueError(f"unknown broker {broker!r}: choose one of {', '.join(BROKERS)}")
        self.broker = broker
        self.directory = Path(directory)
        self.checkout = Path(checkout)
        self.worker_settings = {settings.name: settings for settings in workers}
        self.workers = {}
        self._stack = contextlib.ExitStack()

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc_info):
        self._stack.close()

    def start(self):
        self.password = secrets.token_urlsafe(18)
        password_file = self.directory / "admin-password"
        password_file.write_text(self.password + "\n")
        password_file.chmod(0o600)
        self.start_broker()
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        # The workers load while the site is built and Plone starts.
        for settings in self.worker_settings.values():
            self.start_worker(settings)
        self.build_site(password_file)
        self.start_plone()
        for settings in self.worker_settings.values():
            self.wait_for_worker(settings)

    # --- the broker ------------------------------------------------------

    def start_broker(self):
        """Set up the private broker of :attr:`broker` with its layer, which
        also points this process's Celery app at it (and back at the end)."""
        layer = BROKERS[self.broker](name=f"asynctasks_benchmarks:{self.broker}")
        layer.setUp()
        self._stack.callback(layer.tearDown)
        self.layer = layer
        self.broker_url = layer["broker_url"]
        #: The Redis of the results (and with Redis or Sentinel, the broker).
        self.redis_url = layer["redis_url"]
        #: The settings a process needs for this broker (Sentinel's master_name).
        self.broker_environ = dict(layer["celery_environ"])
        self.broker_pids = self.broker_processes()

    def broker_processes(self):
        """``{name: pid}`` of the broker's processes whose CPU is counted:
        ``broker`` (the Redis master, or this machine's RabbitMQ node, which
        also serves other vhosts) and, for RabbitMQ, ``redis`` (the results)."""
        if self.broker == "redis":
            return {"broker": self.layer.process.pid}
        if self.broker == "sentinel":
            sentinels = self.layer.sentinels
            return {"broker": sentinels.servers[sentinels.master_port()].pid}
        found = {"redis": self.layer.process.pid}
        for status in Path("/proc").glob("[0-9]*/comm"):
            with contextlib.suppress(OSError):
                if status.read_text().strip() == "beam.smp":
                    found["broker"] = int(status.parent.name)
                    break
        return found

    def discard_parked(self):
        """Throw away the jobs of the parked queue (that no worker
        consumes): their messages, and with Redis their ledger entries.

        Deleting the Redis queue alone leaves the jobs in the ledger, where
        the workers' sweeps find them lost and send them again, a thousand
        per sweep and up to three times each: the 11,000 jobs of
        measurement 1 made 7,000 resends during measurements 2 and 3, whose
        CPU the latency paid."""
        if self.broker == "rabbitmq":
            with app.connection_for_write() as connection:
                channel = connection.channel()
                try:
                    channel.queue_purge(PARKED_QUEUE)
                except connection.channel_errors:
                    pass  # not declared yet: nothing was parked
                finally:
                    if channel.is_open:
                        channel.close()
            return
        client = client_for(self.broker_url, app.conf.broker_transport_options)
        ids = [json.loads(raw)["headers"]["id"] for raw in client.lrange(PARKED_QUEUE, 0, -1)]
        client.delete(PARKED_QUEUE)
        ledger.forget(app, *ids)

    # --- Plone -----------------------------------------------------------

    def build_site(self, password_file):
        zopeconfig = site.load_script(self.checkout, "zopeconfig")
        self.ini = zopeconfig.write_single_instance(self.directory, self.port)
        # The benchmark's views, for this instance only.
        site_zcml = zopeconfig.SITE_ZCML.format(header=zopeconfig.HEADER).replace(
            "</configure>",
            '  <include package="asynctasks_benchmarks" />\n\n</configure>',
        )
        (self.directory / "etc" / "site.zcml").write_text(site_zcml)
        log = self.directory / "log" / "create-site.log"
        with open(log, "w") as output:
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "asynctasks_benchmarks.site",
                    str(self.checkout),
                    str(self.directory / "etc" / "zope.conf"),
                    str(password_file),
                ],
                env=self.environment(),
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=300,
            )
        if result.returncode != 0:
            raise RuntimeError(f"building the benchmark site failed:\n{log_tail(log)}")

    def environment(self, **extra):
        env = dict(os.environ, BROKER_URL=self.broker_url, CELERY_RESULT_BACKEND=self.redis_url)
        env.update(self.broker_environ)
        env.update(extra)
        return env

    def start_plone(self):
        self.plone_log = self.directory / "log" / "plone.log"
        output = open(self.plone_log, "w")
        self._stack.callback(output.close)
        process = subprocess.Popen(
            [str(BIN / "runwsgi"), str(self.ini)],
            env=self.environment(),
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.directory,
            start_new_session=True,
        )
        # SIGINT makes runwsgi close the ZODB cleanly.
        self._stack.callback(stop_process, process, signal.SIGINT)
        self.plone = process
        self.portal_url = f"{self.origin}/{site.SITE_ID}"

        def answers():
            if process.poll() is not None:
                raise RuntimeError(f"Plone exited:\n{log_tail(self.plone_log)}")
            try:
                return requests.get(self.portal_url, timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(answers, 120, interval=0.2, message="Plone to answer")

    # --- Celery workers --------------------------------------------------

    def start_worker(self, settings):
        """Start a worker; :meth:`wait_for_worker` waits until it answers."""
        log = self.directory / "log" / f"worker-{settings.name}.log"
        hostname = f"bench-{settings.name}@localhost"
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "ploneintranet.asynctasks.celerytasks",
            "worker",
            "--include",
            "asynctasks_benchmarks.jobs",
            "--loglevel",
            "INFO",
            "--logfile",
            str(log),
            "--hostname",
            hostname,
            "--pool",
            settings.pool,
            "--concurrency",
            str(settings.concurrency),
            "--prefetch-multiplier",
            str(settings.prefetch_multiplier),
            "--queues",
            ",".join(settings.queues),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        process = subprocess.Popen(
            command,
            env=self.environment(ASYNC_ALLOWED_ORIGINS=self.origin),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            start_new_session=True,
        )
        self._stack.callback(stop_process, process)
        self.workers[settings.name] = process

    def wait_for_worker(self, settings):
        process = self.workers[settings.name]
        log = self.directory / "log" / f"worker-{settings.name}.log"
        hostname = f"bench-{settings.name}@localhost"

        def answers():
            if process.poll() is not None:
                raise RuntimeError(f"the {settings.name} worker exited:\n{log_tail(log)}")
            with app.connection_for_write() as connection:
                return app.control.ping(destination=[hostname], timeout=0.5, connection=connection)

        wait_until(answers, 60, message=f"the {settings.name} worker to answer a ping")

    def cpu_seconds(self):
        """CPU seconds used so far by each process: ``plone``, ``broker``
        (and ``redis``, see :meth:`broker_processes`), ``worker-<name>`` and
        ``bench`` (this process, the client)."""
        times = os.times()
        used = {"plone": process_tree_cpu(self.plone.pid), "bench": times.user + times.system}
        for name, pid in self.broker_pids.items():
            used[name] = process_tree_cpu(pid)
        for name, process in self.workers.items():
            used[f"worker-{name}"] = process_tree_cpu(process.pid)
        return used

    def worker_rss(self, name):
        return process_tree_rss(self.workers[name].pid)

    def pause_worker(self, name):
        """Stop the worker ``name`` taking jobs from its queues; jobs wait."""
        destination = [f"bench-{name}@localhost"]
        for queue in self.worker_settings[name].queues:
            app.control.cancel_consumer(queue, destination=destination, reply=True)

    def resume_worker(self, name):
        destination = [f"bench-{name}@localhost"]
        for queue in self.worker_settings[name].queues:
            app.control.add_consumer(queue, destination=destination, reply=True)
