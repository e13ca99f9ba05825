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

from plone.app.testing import applyProfile
from plone.app.testing import FunctionalTesting
from plone.app.testing import IntegrationTesting
from plone.app.testing import PloneSandboxLayer
from plone.app.testing import PLONE_FIXTURE
from plone.testing import Layer
from plone.testing.zope import WSGI_SERVER_FIXTURE
from ploneintranet.asynctasks import celerytasks

import os
import plone.app.contenttypes
import ploneintranet.asynctasks
import redis
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time


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


def point_celery_app_at(broker_url, result_backend):
    """Make this process's Celery app use other broker and backend urls.

    Drops the connection pool and result backend the app may have built
    already for the old urls, so nothing still talks to them.
    """
    app = celerytasks.app
    app.conf.update(broker_url=broker_url, result_backend=result_backend)
    if app._pool is not None:
        app._pool.force_close_all()
    app._pool = None
    # Celery keeps the result backend per thread, or app-wide if thread safe.
    app._local = threading.local()
    app._backend_cache = None


def _tail(path, lines=40):
    try:
        with open(path, errors="replace") as log:
            return "".join(log.readlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(process, timeout=10):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


class RedisServerLayer(Layer):
    """A private redis-server on a free loopback port; nothing kept on disk."""

    def setUp(self):
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed, and the async tests need a "
                "private one: run 'apt-get install redis-server' (as root), or "
                "'make test', which installs it"
            )
        self.directory = tempfile.mkdtemp(prefix="asynctasks-redis-")
        port = free_port()
        self.log = os.path.join(self.directory, "redis.log")
        self.process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.directory,
             "--logfile", self.log],
            stdin=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url, socket_connect_timeout=1)

        def answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{_tail(self.log)}")
            try:
                return client.ping()
            except redis.ConnectionError:
                return False

        wait_until(answers, 20, message=f"redis-server on port {port}")
        client.close()
        self["redis_url"] = url
        conf = celerytasks.app.conf
        self.saved_urls = (conf.broker_url, conf.result_backend)
        point_celery_app_at(url, url)

    def tearDown(self):
        point_celery_app_at(*self.saved_urls)
        _stop(self.process)
        shutil.rmtree(self.directory, ignore_errors=True)
        del self["redis_url"]


REDIS_SERVER_FIXTURE = RedisServerLayer(name="ploneintranet.asynctasks:RedisServer")


class CeleryWorkerLayer(Layer):
    """A real Celery worker process consuming the private Redis.

    Retries are made fast (at most 3, backoff capped at 2 s) so that tests of
    failing jobs end quickly.
    """

    defaultBases = (REDIS_SERVER_FIXTURE,)
    concurrency = 2

    def setUp(self):
        url = self["redis_url"]
        self.directory = tempfile.mkdtemp(prefix="asynctasks-celery-")
        self.log = os.path.join(self.directory, "celery.log")
        self.name = f"asynctasks-test-{os.getpid()}@localhost"
        env = dict(
            os.environ,
            BROKER_URL=url,
            CELERY_RESULT_BACKEND=url,
            ASYNC_MAX_RETRIES="3",
            ASYNC_RETRY_BACKOFF_MAX="2",
            ASYNC_CONNECT_TIMEOUT="2",
            ASYNC_READ_TIMEOUT="30",
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery",
             "-A", "ploneintranet.asynctasks.celerytasks", "worker",
             "--loglevel", "INFO", "--logfile", self.log,
             "--concurrency", str(self.concurrency), "--hostname", self.name,
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            env=env,
            stdin=subprocess.DEVNULL,
            cwd=self.directory,
        )

        def answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"the Celery worker exited:\n{_tail(self.log)}")
            return celerytasks.app.control.ping(destination=[self.name], timeout=0.5)

        try:
            wait_until(answers, 60, message="the Celery worker to answer a ping")
        except AssertionError:
            _stop(self.process)
            raise AssertionError(f"the Celery worker did not start:\n{_tail(self.log)}")
        self["celery_worker"] = self.process
        self["celery_log"] = self.log

    def tearDown(self):
        _stop(self.process, timeout=20)
        shutil.rmtree(self.directory, ignore_errors=True)
        del self["celery_worker"]
        del self["celery_log"]


CELERY_WORKER_FIXTURE = CeleryWorkerLayer(name="ploneintranet.asynctasks:CeleryWorker")


class AsyncLayer(PloneSandboxLayer):
    """A Plone site with its content types and ploneintranet.asynctasks."""

    defaultBases = (PLONE_FIXTURE,)

    def setUpZope(self, app, configurationContext):
        self.loadZCML(package=plone.app.contenttypes)
        self.loadZCML(package=ploneintranet.asynctasks)

    def setUpPloneSite(self, portal):
        applyProfile(portal, "plone.app.contenttypes:default")
        applyProfile(portal, "ploneintranet.asynctasks:default")


ASYNC_FIXTURE = AsyncLayer()

#: Plone with the add-on, no services: for tests of the Plone side alone.
ASYNC_INTEGRATION_TESTING = IntegrationTesting(
    bases=(ASYNC_FIXTURE,), name="ploneintranet.asynctasks:Integration"
)

#: The whole pipeline: Plone behind a WSGI server, Redis and a Celery worker.
ASYNC_FUNCTIONAL_TESTING = FunctionalTesting(
    bases=(CELERY_WORKER_FIXTURE, ASYNC_FIXTURE, WSGI_SERVER_FIXTURE),
    name="ploneintranet.asynctasks:Functional",
)
