"""Test layers that run the real pipeline; reuse them in your add-on's tests.

- :data:`REDIS_SERVER_FIXTURE` starts a private ``redis-server`` on a free
  loopback port and points the Celery app at it (resource ``redis_url``).
- :data:`CELERY_WORKER_FIXTURE` runs a real Celery worker process against it
  (resources ``celery_worker`` and ``celery_log``, the worker's log file).
- :data:`ASYNC_FIXTURE` is a Plone site with ``ploneintranet.asynctasks``
  installed.
- :data:`ASYNC_FUNCTIONAL_TESTING` puts it all together behind a WSGI server,
  so jobs really travel Plone -> Redis -> worker -> HTTP -> Plone.

::

    class TestMyJob(unittest.TestCase):
        layer = ASYNC_FUNCTIONAL_TESTING
"""

import base64
import http.server
import json
from kombu import pools
import os
from pathlib import Path
import plone.app.contenttypes
from plone.app.testing import PLONE_FIXTURE
from plone.app.testing import TEST_USER_NAME
from plone.app.testing import TEST_USER_PASSWORD
from plone.app.testing import FunctionalTesting
from plone.app.testing import IntegrationTesting
from plone.app.testing import PloneSandboxLayer
from plone.app.testing import applyProfile
from plone.testing import Layer
from plone.testing.zope import WSGI_SERVER_FIXTURE
import ploneintranet.asynctasks
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks import celerytasks
import redis
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from urllib.parse import parse_qs
import uuid


def free_port():
    """Return a TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout, interval=0.05, message="condition"):
    """Call ``condition`` until it returns a true value or ``timeout`` passes.

    Returns that value; raises ``AssertionError`` naming ``message`` on timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {message}")
        time.sleep(interval)


def point_celery_app_at(broker_url, result_backend, broker_options=None, backend_options=None):
    """Make this process's Celery app use other broker and backend urls,
    with the transport options of each (``master_name`` for Sentinel), and
    the queues and options that broker gets
    (:func:`~ploneintranet.asynctasks.celeryconfig.broker_settings`).
    Returns the settings it replaced, for :func:`restore_celery_app`.

    Drops the connection pool and result backend the app may have built
    already for the old urls, so nothing still talks to them.
    """
    settings = celeryconfig.broker_settings(
        broker_url, result_backend, broker_options, backend_options, celeryconfig.ASYNC_AMQP_QUEUE_TYPE
    )
    saved = {name: celerytasks.app.conf[name] for name in settings}
    restore_celery_app(settings)
    return saved


def restore_celery_app(settings):
    """Give this process's Celery app the broker ``settings`` that
    :func:`point_celery_app_at` returned."""
    app = celerytasks.app
    app.conf.update(settings)
    # kombu keeps pools per url in a registry of its own, and Celery keeps the
    # producer pool (that control commands publish with) of the old url: a
    # closed pool must be neither reused nor found again for the same url.
    pools.reset()
    app._pool = None
    app.amqp._producer_pool = None
    # the queues, their exchanges and the router of the old broker
    app.__dict__.pop("amqp", None)
    # Celery keeps the result backend per thread, or app-wide if thread safe.
    app._local = threading.local()
    app._backend_cache = None


def log_tail(path, lines=40):
    """The last ``lines`` lines of the log file ``path``, for an error
    message; ``(no log)`` if it cannot be read."""
    try:
        with open(path, errors="replace") as log:
            return "".join(log.readlines()[-lines:])
    except OSError:
        return "(no log)"


class CountingJobServer:
    """A loopback HTTP server in Plone's place for jobs: it answers each POST
    200 after ``seconds`` and counts the POSTs per posted ``key`` field in
    :attr:`posts`. Jobs go to :attr:`url`; :meth:`close` stops it."""

    def __init__(self, seconds=0):
        self.seconds = seconds
        self.posts = {}
        lock, server = threading.Lock(), self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                if len(body) < length:
                    return  # its sender died in the middle: no job arrived
                key = parse_qs(body.decode()).get("key", ["?"])[0]
                with lock:
                    server.posts[key] = server.posts.get(key, 0) + 1
                time.sleep(server.seconds)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/job"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


def stop_process(process, sig=signal.SIGTERM, timeout=20):
    """Send ``sig`` to ``process`` and its children; kill them if they linger."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)
    # Pool processes of a killed Celery worker may outlive their parent.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def start_redis_server(port, directory, *arguments, log="redis.log"):
    """Start ``redis-server`` on 127.0.0.1:``port``; return the process once
    it answers. Nothing is written to disk but its log in ``directory``
    (file ``log``). ``arguments`` are more of its options, such as
    ``"--replicaof", "127.0.0.1", "6379"``."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed, and the async tests need a "
            "private one: run 'apt-get install redis-server' (as root), or "
            "'make test', which installs it"
        )
    log = os.path.join(directory, log)
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            directory,
            "--logfile",
            log,
            *arguments,
        ],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)

    def answers():
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited:\n{log_tail(log)}")
        try:
            return client.ping()
        except redis.ConnectionError:
            return False

    try:
        wait_until(answers, 20, message=f"redis-server on port {port}")
    finally:
        client.close()
    return process


def start_celery_worker(redis_url, directory, name, concurrency=2, queues=None, imports=(), **environ):
    """Start a Celery worker process for the broker ``redis_url`` (any
    broker url: results go there too unless ``environ`` names a
    ``CELERY_RESULT_BACKEND``); return it once it answers a ping. ``queues``
    (names) limits the queues it consumes; without it, it consumes every
    queue of ``celeryconfig.ASYNC_QUEUES``. ``imports`` names modules of your
    own tasks (``celery worker -I``). ``environ`` adds settings such as
    ``ASYNC_MAX_RETRIES`` or ``BROKER_TRANSPORT_OPTIONS``; its log is
    ``directory/<name>.log``."""
    log = os.path.join(directory, f"{name}.log")
    env = dict(os.environ, BROKER_URL=redis_url, CELERY_RESULT_BACKEND=redis_url)
    env.update({key: str(value) for key, value in environ.items()})
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "ploneintranet.asynctasks.celerytasks",
        "worker",
        "--loglevel",
        "INFO",
        "--logfile",
        log,
        "--concurrency",
        str(concurrency),
        "--hostname",
        f"{name}@localhost",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if queues:
        command += ["--queues", ",".join(queues)]
    if imports:
        command += ["--include", ",".join(imports)]
    process = subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        cwd=directory,
        start_new_session=True,
    )

    def answers():
        if process.poll() is not None:
            raise RuntimeError(f"the Celery worker exited:\n{log_tail(log)}")
        app = celerytasks.app
        # not a pooled connection: after a Redis restart it can miss replies
        with app.connection_for_write() as connection:
            return app.control.ping(destination=[f"{name}@localhost"], timeout=0.5, connection=connection)

    try:
        wait_until(answers, 60, message="the Celery worker to answer a ping")
    except AssertionError:
        stop_process(process)
        raise AssertionError(f"the Celery worker did not start:\n{log_tail(log)}") from None
    return process


class RedisServerLayer(Layer):
    """A private redis-server on a free loopback port; nothing kept on disk.

    Resource ``redis_url``. :meth:`stop_server` and :meth:`start_server`
    let a test take it away and bring it back on the same port.
    """

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="asynctasks-redis-")
        self.port = free_port()
        self.start_server()
        url = f"redis://127.0.0.1:{self.port}/0"
        self["redis_url"] = self["broker_url"] = url
        self["celery_environ"] = {}
        self.saved = point_celery_app_at(url, url)

    def start_server(self):
        self.process = start_redis_server(self.port, self.directory)
        if "redis_url" in self:
            # Back after stop_server: Celery's result consumer may have given
            # up on it for good meanwhile ("Retry limit exceeded ... must be
            # restarted"), so this process gets a new one, as a restarted
            # Plone would.
            point_celery_app_at(self["redis_url"], self["redis_url"])

    def stop_server(self):
        stop_process(self.process)

    def tearDown(self):
        try:
            restore_celery_app(self.saved)
        finally:  # never leave a redis-server behind
            self.stop_server()
            shutil.rmtree(self.directory, ignore_errors=True)
            del self["redis_url"], self["broker_url"], self["celery_environ"]


REDIS_SERVER_FIXTURE = RedisServerLayer(name="ploneintranet.asynctasks:RedisServer")


class CeleryWorkerLayer(Layer):
    """A real Celery worker process consuming the private Redis.

    Resources ``celery_worker`` (the process) and ``celery_log`` (its log
    file; each worker started has its own). Settings suit tests: retries are
    fast (at most 2 s apart; Celery's full jitter makes a wait 1 s on average,
    so 30 retries outlast a 10 s outage, while 8 would not) and Redis hands out
    again a job whose worker died after 10 s (``ASYNC_VISIBILITY_TIMEOUT``);
    the worker looks for jobs that vanished on their way every 2 s
    (``ASYNC_SWEEP_INTERVAL``). :meth:`kill_worker` and :meth:`start_worker` let a test replace it.
    """

    defaultBases = (REDIS_SERVER_FIXTURE,)
    concurrency = 2
    #: Modules of tasks of your own that the worker imports (``-I``).
    imports = ()
    environ = dict(
        ASYNC_MAX_RETRIES=30,
        ASYNC_SWEEP_INTERVAL=2,
        ASYNC_RETRY_BACKOFF_MAX=2,
        ASYNC_CONNECT_TIMEOUT=2,
        ASYNC_READ_TIMEOUT=30,
        ASYNC_VISIBILITY_TIMEOUT=10,
    )

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="asynctasks-celery-")
        self.generation = 0
        self.start_worker()

    def start_worker(self):
        """Start a (new) worker; ``celery_log`` becomes its log file."""
        self.generation += 1
        self.name = f"asynctasks-test-{os.getpid()}-{self.generation}"
        self.process = start_celery_worker(
            self.get("broker_url") or self["redis_url"],
            self.directory,
            self.name,
            self.concurrency,
            imports=self.imports,
            **{**self.environ, **self.get("celery_environ", {})},
        )
        self["celery_worker"] = self.process
        self["celery_log"] = os.path.join(self.directory, f"{self.name}.log")

    def kill_worker(self, sig=signal.SIGKILL):
        """Stop the worker and its pool processes with ``sig``."""
        stop_process(self.process, sig)

    def tearDown(self):
        stop_process(self.process)
        shutil.rmtree(self.directory, ignore_errors=True)
        del self["celery_worker"]
        del self["celery_log"]


CELERY_WORKER_FIXTURE = CeleryWorkerLayer(name="ploneintranet.asynctasks:CeleryWorker")


# --- the other brokers: RabbitMQ and Redis Sentinel ---------------------------

#: The RabbitMQ the tests use, with its default user; ``make test`` starts it.
RABBITMQ_ADDRESS = "guest:guest@127.0.0.1:5672"


def rabbitmqctl(*arguments):
    """Run ``rabbitmqctl`` with ``arguments``; return its output. Raises
    ``RuntimeError`` saying what to do if it fails."""
    binary = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    try:
        result = subprocess.run([binary, *arguments], capture_output=True, text=True, timeout=120)
    except OSError as error:
        result = subprocess.CompletedProcess(binary, 127, "", str(error))
    if result.returncode:
        raise RuntimeError(
            f"rabbitmqctl {' '.join(arguments)} failed ({result.stderr.strip() or result.stdout.strip()}): "
            "the RabbitMQ tests make a vhost of their own with it, on the RabbitMQ of "
            f"{RABBITMQ_ADDRESS.split('@')[1]}; run 'make rabbitmq-server' (as root), which "
            "installs and starts it, and run the tests as root or as the rabbitmq user"
        )
    return result.stdout


class RabbitMQLayer(Layer):
    """A private vhost on this machine's RabbitMQ (created and deleted with
    ``rabbitmqctl``) as the broker, and a private redis-server for the
    results, the debounce keys and push; the Celery app points at both.

    Resources ``broker_url`` (``amqp://``), ``redis_url`` (the Redis),
    ``celery_environ`` (the settings a worker needs) and ``vhost``.
    """

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="asynctasks-rabbitmq-")
        self.vhost = f"asynctasks-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        rabbitmqctl("add_vhost", self.vhost)
        try:
            rabbitmqctl("set_permissions", "-p", self.vhost, RABBITMQ_ADDRESS.split(":")[0], ".*", ".*", ".*")
            self.port = free_port()
            self.process = start_redis_server(self.port, self.directory)
        except BaseException:
            rabbitmqctl("delete_vhost", self.vhost)
            raise
        redis_url = f"redis://127.0.0.1:{self.port}/0"
        self["broker_url"] = f"amqp://{RABBITMQ_ADDRESS}/{self.vhost}"
        self["redis_url"] = redis_url
        self["vhost"] = self.vhost
        self["celery_environ"] = {"CELERY_RESULT_BACKEND": redis_url}
        self.saved = point_celery_app_at(self["broker_url"], redis_url)

    def tearDown(self):
        try:
            restore_celery_app(self.saved)
        finally:
            stop_process(self.process)
            rabbitmqctl("delete_vhost", self.vhost)
            shutil.rmtree(self.directory, ignore_errors=True)
            for name in ("broker_url", "redis_url", "vhost", "celery_environ"):
                del self[name]


RABBITMQ_FIXTURE = RabbitMQLayer(name="ploneintranet.asynctasks:RabbitMQ")
#: A real Celery worker on the RabbitMQ vhost, results in the private Redis.
RABBITMQ_WORKER_FIXTURE = CeleryWorkerLayer(bases=(RABBITMQ_FIXTURE,), name="ploneintranet.asynctasks:RabbitMQWorker")


def redis_info(port, section="replication"):
    """``INFO section`` of the Redis on 127.0.0.1:``port``; ``{}`` if it does not answer."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)
    try:
        return client.info(section)
    except redis.RedisError:
        return {}
    finally:
        client.close()


class RedisSentinels:
    """A Redis master, its replica and three sentinels on free loopback
    ports, nothing on disk but their logs and the sentinels' configuration
    in ``directory``. A sentinel declares the master down after
    ``down_after`` ms without an answer; two of three agree to fail over.

    :attr:`url` and :attr:`options` are the broker url and transport options.
    """

    master_name = "asynctasks-test"

    def __init__(self, directory, down_after=1000):
        self.directory = directory
        self.down_after = down_after
        self.servers = {}  # port -> redis-server process
        self.sentinels = {}  # port -> sentinel process

    @property
    def url(self):
        """kombu's Sentinel form: ``sentinel://127.0.0.1:<port>;...``."""
        return ";".join(f"sentinel://127.0.0.1:{port}/0" for port in self.sentinels)

    @property
    def options(self):
        """The transport options that name the master."""
        return {"master_name": self.master_name}

    def start(self):
        """Start the master, the replica and the sentinels; return once the
        replica is in sync and every sentinel knows the replica and the two
        other sentinels (a failover needs both)."""
        master = free_port()
        self.servers[master] = start_redis_server(master, self.directory, log=f"redis-{master}.log")
        replica = free_port()
        self.servers[replica] = start_redis_server(
            replica, self.directory, "--replicaof", "127.0.0.1", str(master), log=f"redis-{replica}.log"
        )
        for _ in range(3):
            self.start_sentinel(master)
        wait_until(
            lambda: redis_info(replica).get("master_link_status") == "up",
            30,
            message="the replica to sync with the master",
        )
        wait_until(self.ready, 60, interval=0.2, message="the sentinels to know the replica and each other")
        return self

    def start_sentinel(self, master):
        port = free_port()
        config = os.path.join(self.directory, f"sentinel-{port}.conf")
        with open(config, "w") as out:
            out.write(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"logfile {self.directory}/sentinel-{port}.log\n"
                f"sentinel monitor {self.master_name} 127.0.0.1 {master} 2\n"
                f"sentinel down-after-milliseconds {self.master_name} {self.down_after}\n"
                f"sentinel failover-timeout {self.master_name} 10000\n"
                f"sentinel parallel-syncs {self.master_name} 1\n"
            )
        self.sentinels[port] = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", config, "--sentinel"],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def ask(self, port, *command):
        """Send a command to the sentinel on ``port``; ``None`` if it does not answer."""
        client = redis.Redis(
            host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2, decode_responses=True
        )
        try:
            return client.execute_command(*command)
        except redis.RedisError:
            return None
        finally:
            client.close()

    def ready(self):
        for port, process in self.sentinels.items():
            if process.poll() is not None:
                log = os.path.join(self.directory, f"sentinel-{port}.log")
                raise RuntimeError(f"a sentinel exited:\n{log_tail(log)}")
            master = self.ask(port, "SENTINEL", "MASTER", self.master_name)
            if not master:
                return False
            # redis-py answers a dict; a bare reply is [name, value, ...]
            fields = master if isinstance(master, dict) else dict(zip(master[::2], master[1::2], strict=False))
            if int(fields.get("num-slaves", 0)) < 1 or int(fields.get("num-other-sentinels", 0)) < 2:
                return False
        return True

    def master_port(self):
        """The port of the master the sentinels name now."""
        for port in self.sentinels:
            address = self.ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
            if address:
                return int(address[1])
        raise AssertionError("no sentinel answers")

    def kill_master(self):
        """SIGKILL the master; return its port."""
        port = self.master_port()
        stop_process(self.servers[port], signal.SIGKILL)
        return port

    def restart(self, port):
        """Start the Redis of ``port`` again, empty; the sentinels make it a
        replica of the master they promoted meanwhile."""
        self.servers[port] = start_redis_server(port, self.directory, log=f"redis-{port}-again.log")

    def wait_for_failover(self, old, timeout=60):
        """Wait until the sentinels name a master other than port ``old`` and
        it answers as a master; return its port."""

        def promoted():
            port = self.master_port()
            return port if port != old and redis_info(port).get("role") == "master" else None

        return wait_until(promoted, timeout, interval=0.1, message="Sentinel to promote the replica")

    def stop(self):
        """Stop every process."""
        for process in [*self.sentinels.values(), *self.servers.values()]:
            stop_process(process)


class RedisSentinelLayer(Layer):
    """A master, a replica and three sentinels (:class:`RedisSentinels`); the
    Celery app's broker and results go through the sentinels.

    Resources ``broker_url`` and ``redis_url`` (the ``sentinel://`` url),
    ``redis_options`` (its transport options), ``sentinels`` and
    ``celery_environ``.
    """

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="asynctasks-sentinel-")
        self.sentinels = RedisSentinels(self.directory)
        try:
            self.sentinels.start()
        except BaseException:
            self.sentinels.stop()
            raise
        url, options = self.sentinels.url, self.sentinels.options
        self["broker_url"] = self["redis_url"] = url
        self["redis_options"] = options
        self["sentinels"] = self.sentinels
        self["celery_environ"] = {"BROKER_TRANSPORT_OPTIONS": json.dumps(options)}
        self.saved = point_celery_app_at(url, url, options)

    def tearDown(self):
        try:
            restore_celery_app(self.saved)
        finally:
            self.sentinels.stop()
            shutil.rmtree(self.directory, ignore_errors=True)
            for name in ("broker_url", "redis_url", "redis_options", "sentinels", "celery_environ"):
                del self[name]


SENTINEL_FIXTURE = RedisSentinelLayer(name="ploneintranet.asynctasks:RedisSentinel")
#: A real Celery worker on the Sentinel-watched Redis.
SENTINEL_WORKER_FIXTURE = CeleryWorkerLayer(bases=(SENTINEL_FIXTURE,), name="ploneintranet.asynctasks:SentinelWorker")


class AsyncLayer(PloneSandboxLayer):
    """A Plone site with its content types and ploneintranet.asynctasks."""

    defaultBases = (PLONE_FIXTURE,)

    def setUpZope(self, app, configurationContext):
        # As Plone's instances (zope.conf's <environment>): the add-on's
        # locales/*.po are compiled to .mo when its ZCML is loaded.
        os.environ.setdefault("zope_i18n_compile_mo_files", "true")
        self.loadZCML(package=plone.app.contenttypes)
        self.loadZCML(package=ploneintranet.asynctasks)

    def setUpPloneSite(self, portal):
        applyProfile(portal, "plone.app.contenttypes:default")
        applyProfile(portal, "ploneintranet.asynctasks:default")


ASYNC_FIXTURE = AsyncLayer()

#: Plone with the add-on, no services: for tests of the Plone side alone.
ASYNC_INTEGRATION_TESTING = IntegrationTesting(bases=(ASYNC_FIXTURE,), name="ploneintranet.asynctasks:Integration")

#: The whole pipeline: Plone behind a WSGI server, Redis and a Celery worker.
ASYNC_FUNCTIONAL_TESTING = FunctionalTesting(
    bases=(CELERY_WORKER_FIXTURE, ASYNC_FIXTURE, WSGI_SERVER_FIXTURE),
    name="ploneintranet.asynctasks:Functional",
)


def start_push_server(port, plone_url, redis_url, directory, **environ):
    """Start the websocket push server (``python -m
    ploneintranet.asynctasks.push``) on 127.0.0.1:``port``, authenticating
    sockets against ``plone_url``; return the process once it listens.
    ``environ`` adds settings such as ``ASYNC_PUSH_MAX_SOCKETS_PER_USER``.
    Its log is ``directory/push.log``."""
    log = os.path.join(directory, "push.log")
    env = dict(
        os.environ,
        BROKER_URL=redis_url,
        ASYNC_PUSH_REDIS_URL=redis_url,
        ASYNC_PUSH_PLONE_URL=plone_url,
    )
    env.update({key: str(value) for key, value in environ.items()})
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ploneintranet.asynctasks.push", "--port", str(port), "--address", "127.0.0.1"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=directory,
            start_new_session=True,
        )

    def listens():
        if process.poll() is not None:
            raise RuntimeError(f"the push server exited:\n{log_tail(log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return False
        return True

    try:
        wait_until(listens, 30, message=f"the push server on port {port}")
    except AssertionError:
        stop_process(process)
        raise
    return process


class PushServerLayer(Layer):
    """The websocket push server as a real process, for the Plone of the WSGI
    server layer (site ``plone``) and the private Redis.

    Resources ``push_url`` (``ws://127.0.0.1:<port>/push``) and ``push_log``.
    This process's ``celeryconfig`` points at it while the layer is set up,
    so pages load pat-push for this port and messages go to this Redis.
    """

    defaultBases = (REDIS_SERVER_FIXTURE, WSGI_SERVER_FIXTURE)
    settings = ("ASYNC_PUSH_PORT", "ASYNC_PUSH_REDIS_URL", "ASYNC_PUSH_REDIS_OPTIONS")
    #: Settings of the push server process, such as its limits.
    environ = {}

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="asynctasks-push-")
        self.port = free_port()
        self.plone_url = f"http://{self['host']}:{self['port']}/plone"
        self.start_server()
        self.saved = {name: getattr(celeryconfig, name) for name in self.settings}
        celeryconfig.ASYNC_PUSH_PORT = self.port
        celeryconfig.ASYNC_PUSH_REDIS_URL = self["redis_url"]
        celeryconfig.ASYNC_PUSH_REDIS_OPTIONS = self.get("redis_options", {})
        self["push_url"] = f"ws://127.0.0.1:{self.port}/push"
        self["push_log"] = os.path.join(self.directory, "push.log")

    def start_server(self):
        self.process = start_push_server(
            self.port,
            self.plone_url,
            self["redis_url"],
            self.directory,
            **{**self.environ, **self.get("celery_environ", {})},
        )

    def stop_server(self):
        stop_process(self.process)

    def tearDown(self):
        for name, value in self.saved.items():
            setattr(celeryconfig, name, value)
        stop_process(self.process)
        shutil.rmtree(self.directory, ignore_errors=True)
        del self["push_url"]
        del self["push_log"]


PUSH_SERVER_FIXTURE = PushServerLayer(name="ploneintranet.asynctasks:PushServer")

#: The pipeline with the push server: Plone, Redis, a Celery worker, push.
ASYNC_PUSH_TESTING = FunctionalTesting(
    bases=(CELERY_WORKER_FIXTURE, ASYNC_FIXTURE, PUSH_SERVER_FIXTURE),
    name="ploneintranet.asynctasks:Push",
)


# --- the names of upstream's ploneintranet.asynctasks 7.2 testing module ----
# Tests written for upstream's layers run on ours: same names, real services.

#: Upstream's name of :data:`CELERY_WORKER_FIXTURE`.
CELERY_FIXTURE = CELERY_WORKER_FIXTURE
#: Upstream's name of :data:`ASYNC_FIXTURE`.
FIXTURE = ASYNC_FIXTURE
#: Upstream's name of :data:`ASYNC_INTEGRATION_TESTING`.
INTEGRATION_TESTING = ASYNC_INTEGRATION_TESTING
#: Upstream's name of :data:`ASYNC_FUNCTIONAL_TESTING` (worker and WSGI server).
FUNCTIONAL_TESTING = ASYNC_FUNCTIONAL_TESTING


class BaseTestCase(unittest.TestCase):
    """Upstream's base test case: ``app``, ``portal`` and ``request`` of the
    layer, the request logged in with HTTP Basic auth, and its helpers."""

    def setUp(self):
        self.app = self.layer["app"]
        self.portal = self.layer["portal"]
        self.request = self.portal.REQUEST
        self.basic_auth()

    def basic_auth(self, username=TEST_USER_NAME, password=TEST_USER_PASSWORD):
        """Give the request HTTP Basic credentials of ``username``."""
        credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.request._auth = f"Basic {credentials}"

    def redis_running(self):
        """True if the broker's Redis answers."""
        try:
            return redis.Redis.from_url(celerytasks.app.conf.broker_url, socket_timeout=2).ping()
        except redis.RedisError:
            return False

    def waitfor(self, result, timeout=3.0):
        """Wait until the Celery ``result`` is ready; fail after ``timeout``."""
        try:
            wait_until(result.ready, timeout, interval=0.1, message="the result")
        except AssertionError:
            self.fail(f"Did not get a result in {timeout} seconds")


class IntegrationTestCase(BaseTestCase):
    """Upstream's integration test case."""

    layer = INTEGRATION_TESTING


class FunctionalTestCase(BaseTestCase):
    """Upstream's functional test case: the whole pipeline."""

    layer = FUNCTIONAL_TESTING


def postgresql_bin():
    """The directory of Debian's PostgreSQL programs (initdb, pg_ctl)."""
    for version in ("17", "16", "15", "14", "13"):
        directory = f"/usr/lib/postgresql/{version}/bin"
        if os.path.exists(f"{directory}/initdb"):
            return directory
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(found)
    raise RuntimeError("initdb is not installed: run 'apt-get install postgresql' (make postgresql does it)")


class PostgreSQLCluster:
    """A PostgreSQL cluster of its own (``initdb``) in ``directory``, on a
    free loopback port, trusting local connections; run as the postgres
    user when this process is root (initdb refuses root)."""

    def __init__(self, directory):
        self.bin = postgresql_bin()
        self.directory = Path(directory)
        self.data = self.directory / "data"
        self.log = self.directory / "postgresql.log"
        self.port = free_port()

    def run(self, program, *arguments):
        command = [f"{self.bin}/{program}", *arguments]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode:
            raise RuntimeError(f"{program} failed: {result.stderr or result.stdout}\n{log_tail(self.log)}")

    def init(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        self.start()

    def start(self):
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} -c fsync=off"
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self):
        self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def dsn(self):
        return f"host=127.0.0.1 port={self.port} user=postgres"

    def remove(self):
        try:
            self.stop()
        except RuntimeError:
            pass  # not running
        shutil.rmtree(self.directory, ignore_errors=True)
