"""Routing: Celery queues per task, and HAProxy sending jobs to their instances.

The integration tests run the server of ``make run-zeo`` in small, each part
a real process on a free loopback port: a ZEO server, two Plone instances on
it (``plone-frontend`` and ``plone-worker``, configured by
scripts/zopeconfig.py like those of ``make run-zeo``), HAProxy with
etc/haproxy.cfg in front of them, and the private Redis and Celery worker of
:data:`~ploneintranet.asynctasks.testing.CELERY_WORKER_FIXTURE`, which
consumes every queue. An instance is told apart by what it really does: it
writes the requests it served to its own access log, and waitress names it in
the ``Server`` header of its answers.

etc/haproxy.cfg has a third pool, ``plone_workers_low``, for the slow tasks
listed in a file. Here it lists ``reindex_object`` and the pool is served by
``plone-frontend``: a job that lands there, and not on ``plone-worker`` where
other jobs go, was routed by its task name.
"""

import base64
import http.client
import importlib.util
import os
from pathlib import Path
from plone.testing import Layer
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks.testing import CELERY_WORKER_FIXTURE
from ploneintranet.asynctasks.testing import free_port
from ploneintranet.asynctasks.testing import log_tail
from ploneintranet.asynctasks.testing import stop_process
from ploneintranet.asynctasks.testing import wait_until
from ploneintranet.asynctasks.wire import TASK_NAME_HEADER
from ploneintranet.asynctasks.wire import USER_HEADER
import psycopg2
import re
import requests
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import unittest
import uuid


#: The git checkout whose scripts/ and etc/ these tests use: pytest runs in
#: its root, where pytest.ini is.
ROOT = Path.cwd()
BIN = Path(sys.executable).parent
ADMIN = "admin"
REINDEX = celerytasks.reindex_object.name


#: The scripts each script imports by name (scripts/ is no package).
SCRIPT_IMPORTS = {"preflight": ("supervise",)}


def _load_script(name):
    """Import scripts/<name>.py of the checkout as the module ``name``, after
    the scripts it imports (:data:`SCRIPT_IMPORTS`)."""
    path = ROOT / "scripts" / f"{name}.py"
    if not path.exists():
        raise RuntimeError(
            f"{path} is missing: the routing tests need a checkout of "
            "ploneintranet.asynctasks (scripts/ and etc/), not an installed copy; "
            "run pytest in the checkout's root"
        )
    for imported in SCRIPT_IMPORTS.get(name, ()):
        _load_script(imported)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class ZEORoutingLayer(Layer):
    """ZEO, plone-frontend, plone-worker and HAProxy, as subprocesses.

    Resources: ``haproxy_url`` (the site's address), ``admin`` (login of the
    Zope root user) and ``access_log`` (a function: instance name -> its
    access log's text). Everything runs in a temporary directory, removed
    with every process in tearDown, also when setUp fails half way.
    """

    defaultBases = (CELERY_WORKER_FIXTURE,)
    instances = ("plone-frontend", "plone-worker")

    def setUp(self):
        self.processes = []
        self.directory = Path(tempfile.mkdtemp(prefix="asynctasks-routing-"))
        try:
            self.start_all()
        except BaseException:
            self.stop_all()
            raise

    def start_all(self):
        zopeconfig = _load_script("zopeconfig")
        haproxy = _load_script("preflight").require_haproxy()
        self.var = zopeconfig.make_directories(self.directory / "var")
        redis_url = self["redis_url"]
        self.haproxy_port = free_port()
        # as make run-zeo: jobs go to the site's address, HAProxy's
        origins = f"http://127.0.0.1:{self.haproxy_port},http://localhost:{self.haproxy_port}"
        env = dict(os.environ, BROKER_URL=redis_url, CELERY_RESULT_BACKEND=redis_url, ASYNC_ALLOWED_ORIGINS=origins)
        self["admin"] = (ADMIN, self.create_site(zopeconfig, env))
        write_instance = self.start_storage(zopeconfig, env)
        self.ports = {name: free_port() for name in self.instances}
        self.env, self.inis, self.instance_processes = env, {}, {}
        for name in self.instances:
            self.inis[name] = write_instance(name, self.ports[name])
            self.start_instance(name)
        for name in self.instances:
            wait_until(
                lambda name=name: self.answers(f"http://127.0.0.1:{self.ports[name]}/"),
                120,
                0.2,
                f"{name} to answer",
            )
        self["haproxy_url"] = self.start_haproxy(haproxy, env)
        self["access_log"] = self.access_log
        self["topology"] = self

    def create_site(self, zopeconfig, env):
        """Create the site in the FileStorage, before ZEO serves it; return
        the admin password."""
        password = secrets.token_urlsafe(12)
        password_file = self.var / "admin-password"
        password_file.write_text(password)
        self.write_site_instance(zopeconfig)
        self.run_checked(
            "create_site",
            [
                str(BIN / "python"),
                str(ROOT / "scripts" / "create_site.py"),
                str(self.var / "etc" / "zope.conf"),
                str(password_file),
            ],
            env,
        )
        return password

    def write_site_instance(self, zopeconfig):
        """The configuration create_site.py opens the database with."""
        zopeconfig.write_single_instance(self.var, free_port())

    def start_storage(self, zopeconfig, env):
        """Start the ZEO server; once it accepts, return the function that
        writes an instance's configuration: ``(name, port) -> .ini``."""
        address = f"127.0.0.1:{free_port()}"
        zeo_conf = zopeconfig.write_zeo_server(self.var, address)
        self.start("zeo", [str(BIN / "runzeo"), "-C", str(zeo_conf)], env)
        wait_until(lambda: self.accepts(address), 30, 0.1, "the ZEO server")
        return lambda name, port: zopeconfig.write_zeo_instance(self.var, name, port, address)

    def start_haproxy(self, haproxy, env):
        """Start HAProxy with etc/haproxy.cfg; return its url once it answers.

        Only 127.0.0.1 counts as a Celery host, and the pool for slow tasks
        (plone_workers_low) gets reindex_object and is served by the frontend.
        """
        low_tasks = self.directory / "low-tasks.lst"
        low_tasks.write_text(f"# jobs for the pool plone_workers_low\n{REINDEX}\n")
        port = self.haproxy_port
        frontend = f"127.0.0.1:{self.ports['plone-frontend']}"
        haproxy_env = dict(
            env,
            HAPROXY_BIND=f"127.0.0.1:{port}",
            HAPROXY_CELERY_HOSTS="127.0.0.1/32",
            HAPROXY_LOW_TASKS=str(low_tasks),
            PLONE_FRONTEND=frontend,
            PLONE_WORKER=f"127.0.0.1:{self.ports['plone-worker']}",
            PLONE_WORKER_LOW=frontend,
        )
        command = [haproxy, "-W", "-db", "-f", str(ROOT / "etc" / "haproxy.cfg")]
        self.start("haproxy", command, haproxy_env)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: self.answers(url + "/"), 30, 0.1, "HAProxy to answer")
        return url

    def start_instance(self, name):
        """Start the Plone instance ``name`` (again)."""
        command = [str(BIN / "runwsgi"), str(self.inis[name])]
        self.instance_processes[name] = self.start(name, command, self.env)

    def kill_instance(self, name):
        """SIGKILL the Plone instance ``name``, as the kernel's OOM killer would."""
        process = self.instance_processes.pop(name)
        self.processes.remove(process)
        stop_process(process, signal.SIGKILL)

    def run_checked(self, name, command, env):
        log = self.var / "log" / f"{name}.log"
        with open(log, "wb") as output:
            result = subprocess.run(
                command, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, timeout=180
            )
        if result.returncode:
            raise RuntimeError(f"{name} failed:\n{log_tail(log)}")

    def start(self, name, command, env):
        """Start ``command`` in its own process group, output in log/<name>.log."""
        log = self.var / "log" / f"{name}.log"
        with open(log, "wb") as output:
            process = subprocess.Popen(
                command,
                env=env,
                cwd=self.var,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process.log = log
        self.processes.append(process)
        return process

    def check_running(self):
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[0]} exited ({process.returncode}):\n{log_tail(process.log)}")

    def accepts(self, address):
        self.check_running()
        host, port = address.split(":")
        with socket.socket() as sock:
            sock.settimeout(1)
            return sock.connect_ex((host, int(port))) == 0

    def answers(self, url):
        """Does Zope answer ``url`` (directly or through HAProxy)?"""
        self.check_running()
        try:
            return requests.get(url, timeout=10).status_code < 500
        except requests.RequestException:
            return False

    def access_log(self, name):
        return (self.var / "log" / f"{name}-access.log").read_text()

    def stop_all(self):
        # HAProxy first, ZEO last; SIGTERM to each process group.
        for process in reversed(self.processes):
            stop_process(process)
        shutil.rmtree(self.directory, ignore_errors=True)

    def tearDown(self):
        self.stop_all()
        for resource in ("haproxy_url", "admin", "access_log", "topology"):
            del self[resource]


ZEO_ROUTING_FIXTURE = ZEORoutingLayer(name="ploneintranet.asynctasks:ZEORouting")


class RelStorageRoutingLayer(ZEORoutingLayer):
    """The same topology on RelStorage: the instances share a private
    PostgreSQL database, created on the machine's PostgreSQL
    (``ASYNC_TEST_POSTGRESQL``, default ``host=127.0.0.1 user=postgres``)
    and dropped afterwards."""

    server = os.environ.get("ASYNC_TEST_POSTGRESQL", "host=127.0.0.1 user=postgres")

    def setUp(self):
        self.database = f"asynctasks_test_{secrets.token_hex(4)}"
        self.admin_sql(f'CREATE DATABASE "{self.database}"')
        self.dsn = f"{self.server} dbname={self.database}"
        try:
            super().setUp()
        except BaseException:
            self.admin_sql(f'DROP DATABASE IF EXISTS "{self.database}"')
            raise

    def admin_sql(self, statement):
        try:
            connection = psycopg2.connect(f"{self.server} dbname=postgres", connect_timeout=10)
        except psycopg2.OperationalError as error:
            raise RuntimeError(
                f"no PostgreSQL answers at {self.server!r} ({error}); start it (make test "
                "installs Debian's postgresql where none runs) or set ASYNC_TEST_POSTGRESQL"
            ) from None
        connection.autocommit = True  # CREATE/DROP DATABASE run outside a transaction
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()

    def write_site_instance(self, zopeconfig):
        zopeconfig.write_relstorage_instance(self.var, "plone", free_port(), self.dsn, conf="zope")

    def start_storage(self, zopeconfig, env):
        return lambda name, port: zopeconfig.write_relstorage_instance(self.var, name, port, self.dsn)

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            self.admin_sql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


RELSTORAGE_ROUTING_FIXTURE = RelStorageRoutingLayer(name="ploneintranet.asynctasks:RelStorageRouting")


class RoutingTestCase(unittest.TestCase):
    layer = ZEO_ROUTING_FIXTURE

    def setUp(self):
        self.url = self.layer["haproxy_url"]
        self.admin = self.layer["admin"]
        self.log = self.layer["access_log"]

    def served(self, name, needle):
        """The lines of ``name``'s access log that contain ``needle``."""
        return [line for line in self.log(name).splitlines() if needle in line]

    def wait_served(self, name, needle):
        return wait_until(lambda: self.served(name, needle), 10, 0.1, f"{needle} in the access log of {name}")


class TestHAProxyRouting(RoutingTestCase):
    def test_user_traffic_reaches_the_frontend(self):
        probe = uuid.uuid4().hex
        response = requests.get(f"{self.url}/Plone/@@ok?probe={probe}", timeout=30)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.headers["Server"], "plone-frontend")
        self.wait_served("plone-frontend", probe)
        self.assertEqual(self.served("plone-worker", probe), [])

    def test_a_task_header_from_another_host_is_user_traffic(self):
        # The Celery worker connects from 127.0.0.1, the only Celery host
        # here; 127.0.0.2 is another host on the loopback network.
        connection = http.client.HTTPConnection(self.url.split("//")[1], timeout=30, source_address=("127.0.0.2", 0))
        try:
            connection.request("GET", "/Plone/@@ok", headers={TASK_NAME_HEADER: REINDEX})
            response = connection.getresponse()
            response.read()
        finally:
            connection.close()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.getheader("Server"), "plone-frontend")

    def test_jobs_reach_the_worker_instance_and_share_its_zodb(self):
        # @@async-status sends a real job (celerytasks.post) to the site's
        # url, HAProxy: the worker instance stores a checksum, and the
        # frontend reads it back through ZEO.
        status = f"{self.url}/Plone/@@async-status"
        # other tests of this layer may have sent jobs before: count the new ones
        before = {name: len(self.served(name, "async-checktask")) for name in ("plone-frontend", "plone-worker")}
        token = requests.get(status, params={"format": "json"}, auth=self.admin, timeout=60).json()["authenticator"]
        response = requests.post(status, data={"format": "json", "_authenticator": token}, auth=self.admin, timeout=60)
        report = response.json()
        self.assertTrue(report["round_trips"], report)
        self.assertTrue(report["ok"], report)
        self.assertEqual(response.headers["Server"], "plone-frontend")
        wait_until(
            lambda: len(self.served("plone-worker", "async-checktask")) == before["plone-worker"] + 1,
            10,
            0.1,
            "the job in the access log of plone-worker",
        )
        self.assertEqual(len(self.served("plone-frontend", "async-checktask")), before["plone-frontend"])
        self.assertEqual(self.served("plone-worker", "async-status"), [])

    def test_a_task_listed_for_a_pool_reaches_that_pool(self):
        # The confirmation form of @@reindex_object gives a CSRF token, as
        # AbstractPost makes one in Plone; the job is what ReindexObject sends.
        form = requests.get(f"{self.url}/Plone/@@reindex_object", auth=self.admin, timeout=30)
        token = re.search(r'name="_authenticator"\s+value="([^"]+)"', form.text)
        self.assertIsNotNone(token, form.text[:2000])
        basic = base64.b64encode(":".join(self.admin).encode()).decode()
        job = celerytasks.reindex_object.apply_async(
            (
                f"{self.url}/Plone/@@reindex_object",
                {"_authenticator": token.group(1)},
                {"Authorization": f"Basic {basic}", TASK_NAME_HEADER: REINDEX, USER_HEADER: ADMIN},
                {},
            )
        )
        self.assertEqual(job.get(timeout=60), 200)
        posts = self.wait_served("plone-frontend", "POST /Plone/%40%40reindex_object")
        self.assertEqual(len(posts), 1)
        self.assertEqual(self.served("plone-worker", "reindex_object"), [])


class TestWorkerInstanceKilled(RoutingTestCase):
    """SIGKILL the worker instance: jobs go to the frontend through HAProxy
    (its backup server) until the worker instance is back."""

    def job_server(self):
        """The instance that answers a job-shaped request through HAProxy."""
        response = requests.get(f"{self.url}/Plone/@@ok", headers={TASK_NAME_HEADER: celerytasks.post.name}, timeout=30)
        return response.headers.get("Server") if response.status_code == 200 else None

    def round_trips(self):
        status = f"{self.url}/Plone/@@async-status"
        token = requests.get(status, params={"format": "json"}, auth=self.admin, timeout=60).json()["authenticator"]
        response = requests.post(status, data={"format": "json", "_authenticator": token}, auth=self.admin, timeout=90)
        return response.json()

    def test_jobs_go_to_the_frontend_while_the_worker_instance_is_dead(self):
        topology = self.layer["topology"]
        self.assertEqual(self.job_server(), "plone-worker")
        topology.kill_instance("plone-worker")
        try:
            # HAProxy marks it down after three failed checks, 2 s apart
            wait_until(lambda: self.job_server() == "plone-frontend", 30, 0.5, "HAProxy to send jobs to the frontend")
            before = len(self.served("plone-frontend", "async-checktask"))
            report = self.round_trips()
            self.assertTrue(report["ok"], report)
            self.assertEqual(len(self.served("plone-frontend", "async-checktask")), before + 1)
        finally:
            topology.start_instance("plone-worker")
            wait_until(lambda: self.job_server() == "plone-worker", 120, 0.5, "jobs to reach the worker instance again")


class TestWorkerInstanceKilledOnRelStorage(TestWorkerInstanceKilled):
    layer = RELSTORAGE_ROUTING_FIXTURE


class TestCeleryRoutes(unittest.TestCase):
    """The queues of ``ASYNC_TASK_ROUTES``, and that one worker covers them."""

    def queue_of(self, task):
        return celerytasks.app.amqp.router.route({}, task.name)["queue"].name

    def test_jobs_users_wait_for_go_to_high(self):
        self.assertEqual(self.queue_of(celerytasks.reindex_object), "high")
        self.assertEqual(self.queue_of(celerytasks.post), "high")

    def test_the_status_check_task_stays_on_the_default_queue(self):
        self.assertEqual(self.queue_of(celerytasks.add), "celery")

    def test_a_worker_without_queues_consumes_every_routed_queue(self):
        declared = {queue.name for queue in celerytasks.app.conf.task_queues}
        routed = set(celeryconfig.ASYNC_TASK_ROUTES.values())
        self.assertEqual(declared, set(celeryconfig.ASYNC_QUEUES))
        self.assertLessEqual(routed | {"celery"}, declared)

    def test_routes_are_read_from_the_environment(self):
        os.environ["TEST_ROUTES"] = " my.addon.preview = low ,my.addon.* =bulk, "
        try:
            routes = celeryconfig._env_routes("TEST_ROUTES", {})
        finally:
            del os.environ["TEST_ROUTES"]
        self.assertEqual(routes, {"my.addon.preview": "low", "my.addon.*": "bulk"})

    def test_a_malformed_route_names_the_variable(self):
        for value in ("my.addon.preview", "=low", "my.addon.preview=two words"):
            os.environ["TEST_ROUTES"] = value
            try:
                with self.assertRaisesRegex(ValueError, "TEST_ROUTES.*task=queue"):
                    celeryconfig._env_routes("TEST_ROUTES", {})
            finally:
                del os.environ["TEST_ROUTES"]


class TestHAProxyRoutingOnRelStorage(TestHAProxyRouting):
    """Every routing test again, the instances on RelStorage (PostgreSQL)."""

    layer = RELSTORAGE_ROUTING_FIXTURE
