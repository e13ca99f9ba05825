"""The processes, the client and the faults of scripts/fault_matrix.py.

The topology is that of tests/test_routing.py (``ZEORoutingLayer``,
``RelStorageRoutingLayer``), on a Redis that keeps its data on disk, with two
Celery workers, and for RelStorage a PostgreSQL cluster of its own, so that
its server can be restarted without touching the machine's.
"""

from dataclasses import dataclass
from dataclasses import field
import io
from pathlib import Path
from PIL import Image
from plone.testing import Layer
from ploneintranet.asynctasks.testing import CeleryWorkerLayer
from ploneintranet.asynctasks.testing import PostgreSQLCluster
from ploneintranet.asynctasks.testing import RedisServerLayer
from ploneintranet.asynctasks.testing import point_celery_app_at
from ploneintranet.asynctasks.testing import start_celery_worker
from ploneintranet.asynctasks.testing import start_redis_server
from ploneintranet.asynctasks.testing import stop_process
from ploneintranet.asynctasks.testing import wait_until
from ploneintranet.asynctasks.tests.test_routing import RelStorageRoutingLayer
from ploneintranet.asynctasks.tests.test_routing import ZEORoutingLayer
from ploneintranet.asynctasks.wire import TASK_NAME_HEADER
import re
import requests
import secrets
import shutil
import signal
import tempfile
import threading
import time


DATABASES = ("zeo", "relstorage")
FAULTS = ("worker-instance", "broker", "celery-worker", "database")
#: The Plone member who saves; a Contributor of the site.
EDITOR = "fault-editor"
#: Seconds of saves before the fault and after it is over.
BEFORE, AFTER = 8, 8
#: What Plone logs when it keeps a save's jobs in the site's outbox.
KEPT = re.compile(r"(\d+) job\(s\) kept in the site's outbox")
PREVIEW_JOB = re.compile(r'"POST (/Plone/[^ ?"]+?)/(?:@@|%40%40)async-generate-preview[^"]*" (\d{3}) ')


# --- the processes -------------------------------------------------------------


class DurableRedisLayer(RedisServerLayer):
    """The private Redis, keeping its data in an append-only file, written
    at every command, as a broker that may be restarted must: a stopped and
    started Redis has the jobs it had."""

    def start_server(self):
        self.process = start_redis_server(self.port, self.directory, "--appendonly", "yes", "--appendfsync", "always")
        if "redis_url" in self:
            point_celery_app_at(self["redis_url"], self["redis_url"])


class TwoWorkersLayer(Layer):
    """Two Celery workers (``celery-a``, ``celery-b``) consuming every queue,
    with the test settings of :class:`CeleryWorkerLayer`."""

    names = ("celery-a", "celery-b")

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="asynctasks-faults-celery-")
        self.workers = {}
        for name in self.names:
            self.start_worker(name)

    def start_worker(self, name):
        """Start the worker ``name`` (again); its log is ``<directory>/<name>.log``."""
        self.workers[name] = start_celery_worker(
            self["redis_url"], self.directory, name, CeleryWorkerLayer.concurrency, **CeleryWorkerLayer.environ
        )

    def kill_worker(self, name):
        """SIGKILL the worker ``name`` and its pool processes."""
        stop_process(self.workers.pop(name), signal.SIGKILL)

    def tearDown(self):
        for process in self.workers.values():
            stop_process(process)
        shutil.rmtree(self.directory, ignore_errors=True)


class ZEOFaults(ZEORoutingLayer):
    """test_routing's ZEO topology, whose database server can be restarted."""

    kind = "zeo"

    def restart_database(self):
        """Stop the ZEO server (SIGTERM) and start it again at once; its
        clients reconnect."""
        zeo = next(process for process in self.processes if process.log.name.startswith("zeo"))
        self.processes.remove(zeo)
        stop_process(zeo)
        self.start("zeo-again", zeo.args, self.env)


class RelStorageFaults(RelStorageRoutingLayer):
    """test_routing's RelStorage topology, its database in a PostgreSQL
    cluster of its own, which can be restarted."""

    kind = "relstorage"

    def setUp(self):
        self.cluster = PostgreSQLCluster(tempfile.mkdtemp(prefix="asynctasks-faults-pg-"))
        try:
            self.cluster.init()
            self.server = self.cluster.dsn
            super().setUp()
        except BaseException:
            self.cluster.remove()
            raise

    def restart_database(self):
        """Restart the PostgreSQL cluster (``pg_ctl stop -m fast``, then
        start): its connections are closed, RelStorage opens new ones."""
        self.cluster.stop()
        self.cluster.start()

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            self.cluster.remove()


# --- the client ----------------------------------------------------------------


def png(number):
    """A small PNG whose colour depends on ``number``: new bytes per save."""
    out = io.BytesIO()
    Image.new("RGB", (160, 120), (number % 256, (number * 7) % 256, (number * 13) % 256)).save(out, "PNG")
    return out.getvalue()


def add_editor(portal_url, admin):
    """Add the member :data:`EDITOR` (Contributor) through plone.restapi;
    return the password."""
    password = secrets.token_urlsafe(12)
    response = requests.post(
        f"{portal_url}/@users",
        json={
            "username": EDITOR,
            "email": f"{EDITOR}@example.org",
            "password": password,
            "roles": ["Member", "Contributor"],
        },
        headers={"Accept": "application/json"},
        auth=admin,
        timeout=120,
    )
    if response.status_code not in (200, 201):
        raise RuntimeError(f"adding the member {EDITOR} failed: {response.status_code} {response.text[:500]}")
    return password


class Editor(threading.Thread):
    """Logs in through Plone's login form and saves new Images through the
    add form, one after the other, until :meth:`stop`. :attr:`saved` are the
    ids of the items saved; :attr:`refused` what the other saves got."""

    def __init__(self, portal_url, password, prefix):
        super().__init__(name=f"editor-{prefix}", daemon=True)
        self.portal_url = portal_url
        self.prefix = prefix
        self.saved, self.refused = [], []
        self.stopping = threading.Event()
        self.session = requests.Session()
        self.session.trust_env = False
        response = self.session.post(
            f"{portal_url}/login",
            data={"__ac_name": EDITOR, "__ac_password": password, "buttons.login": "Log in", "came_from": portal_url},
            allow_redirects=False,
            timeout=120,
        )
        if "__ac" not in self.session.cookies:
            raise RuntimeError(f"logging in as {EDITOR} failed: {response.status_code} {response.text[:300]!r}")

    def run(self):
        number = 0
        while not self.stopping.is_set():
            number += 1
            try:
                outcome = self.save(number)
            except requests.RequestException as error:
                outcome = f"{type(error).__name__}: {error}"
            if outcome.startswith("saved "):
                self.saved.append(outcome.removeprefix("saved "))
            else:
                self.refused.append(f"save {number} at {time.strftime('%H:%M:%S')}: {outcome}")
                time.sleep(0.5)  # an editor reads the error, then saves again

    def save(self, number):
        """One save through the add form; ``saved <id>`` or what went wrong."""
        form_url = f"{self.portal_url}/++add++Image"
        page = self.session.get(form_url, timeout=120)
        if page.status_code != 200:
            return f"the add form answered {page.status_code}"
        token = re.search(r'name="_authenticator"\s+value="([^"]+)"', page.text) or re.search(
            r'<input[^>]*name="_authenticator"[^>]*value="([^"]+)"', page.text
        )
        title_field = re.search(r'name="(form\.widgets\.[\w.]*title)"', page.text)
        if token is None or title_field is None:
            return "the add form has no authenticator or title field"
        response = self.session.post(
            form_url,
            data={
                "_authenticator": token.group(1),
                title_field.group(1): f"{self.prefix} {number}",
                "form.buttons.save": "Save",
            },
            files={"form.widgets.image": (f"picture-{number}.png", png(number), "image/png")},
            allow_redirects=False,
            timeout=120,
        )
        location = response.headers.get("Location", "")
        if response.status_code != 302 or "++add++" in location or not location.startswith(self.portal_url):
            return f"the save answered {response.status_code} {location or response.text[:200]!r}"
        return "saved " + location.removesuffix("/view").rstrip("/").rsplit("/", 1)[-1]

    def stop(self):
        self.stopping.set()
        self.join(300)


# --- the runs --------------------------------------------------------------------


@dataclass
class Row:
    """The counts of one run."""

    database: str
    fault: str
    committed: int = 0
    arrived: int = 0
    twice: int = 0
    refused: int = 0
    kept: int = 0
    frontend: int = 0
    seconds: float = 0
    lost: list = field(default_factory=list)
    refusals: list = field(default_factory=list)

    @property
    def failed(self):
        return bool(self.lost or self.refused or self.committed == 0)


class Matrix:
    """One database's topology and its runs."""

    def __init__(self, topology, redis, workers, broker_down, drain):
        self.topology, self.redis, self.workers = topology, redis, workers
        self.broker_down, self.drain = broker_down, drain
        self.url = topology["haproxy_url"] + "/Plone"
        self.frontend = f"http://127.0.0.1:{topology.ports['plone-frontend']}/Plone"
        self.admin = topology["admin"]
        self.password = add_editor(self.url, self.admin)
        self.reader = requests.Session()
        self.reader.trust_env = False
        self.reader.auth = self.admin

    # the faults: each returns once the broken part is back

    def fault_worker_instance(self):
        self.topology.kill_instance("plone-worker")
        wait_until(lambda: self.job_server() == "plone-frontend", 60, 0.5, "HAProxy to send jobs to the frontend")
        time.sleep(4)
        self.topology.start_instance("plone-worker")
        wait_until(lambda: self.job_server() == "plone-worker", 120, 0.5, "jobs to reach plone-worker again")

    def fault_broker(self):
        self.redis.stop_server()
        time.sleep(self.broker_down)
        self.redis.start_server()

    def fault_celery_worker(self):
        self.workers.kill_worker("celery-a")
        time.sleep(5)
        self.workers.start_worker("celery-a")

    def fault_database(self):
        self.topology.restart_database()

    def job_server(self):
        """The instance that answers a job-shaped request through HAProxy."""
        try:
            response = requests.get(
                f"{self.url}/@@ok", headers={TASK_NAME_HEADER: "ploneintranet.asynctasks.celerytasks.post"}, timeout=30
            )
        except requests.RequestException:
            return None
        return response.headers.get("Server") if response.status_code == 200 else None

    def run(self, fault):
        row = Row(self.topology.kind, fault)
        started = time.monotonic()
        kept_before = self.kept()
        editor = Editor(self.url, self.password, f"{row.database} {fault}")
        editor.start()
        try:
            time.sleep(BEFORE)
            getattr(self, "fault_" + fault.replace("-", "_"))()
            time.sleep(AFTER)
        finally:
            editor.stop()
        row.committed, row.refused, row.refusals = len(editor.saved), len(editor.refused), editor.refused
        missing = self.wait_for_effects(editor.saved)
        row.arrived = row.committed - len(missing)
        row.lost = missing
        runs = self.preview_runs()
        row.twice = sum(1 for item in editor.saved if runs.get(item, 0) > 1)
        served = self.preview_runs(("plone-frontend",))
        row.frontend = sum(1 for item in editor.saved if served.get(item))
        row.kept = self.kept() - kept_before
        row.seconds = time.monotonic() - started
        return row

    def preview_state(self, item):
        """``ready``, ``pending``, ``none`` or what the frontend answered,
        read from the database by plone-frontend."""
        try:
            response = self.reader.get(f"{self.frontend}/{item}/@@async-preview-snippet", timeout=60)
        except requests.RequestException as error:
            return type(error).__name__
        if response.status_code != 200:
            return f"HTTP {response.status_code}"
        found = re.search(r'class="async-preview (\w+)', response.text)
        return found.group(1) if found else "no preview queued"

    def wait_for_effects(self, items):
        """Wait until every item's preview is ready, at most ``drain``
        seconds; return ``item: state`` of those whose preview never came."""
        waiting = list(items)
        deadline = time.monotonic() + self.drain
        states = {}
        while waiting:
            states = {item: self.preview_state(item) for item in waiting}
            waiting = [item for item, state in states.items() if state != "ready"]
            if not waiting or time.monotonic() > deadline:
                break
            time.sleep(2)
        return [f"{item}: {states[item]}" for item in waiting]

    def kept(self):
        """How many jobs plone-frontend, where every save goes, kept in the
        site's outbox so far (its log)."""
        text = (self.topology.var / "log" / "plone-frontend.log").read_text(errors="replace")
        return sum(int(count) for count in KEPT.findall(text))

    def preview_runs(self, instances=("plone-frontend", "plone-worker")):
        """How many POSTs to each item's ``@@async-generate-preview`` the
        ``instances`` answered 200, by item id."""
        runs = {}
        for name in instances:
            for path, status in PREVIEW_JOB.findall(self.topology.access_log(name)):
                if status == "200":
                    item = path.rsplit("/", 1)[-1]
                    runs[item] = runs.get(item, 0) + 1
        return runs


def keep_logs(topology, workers, directory):
    """Copy the logs of the processes (Plone instances and their access
    logs, the database and HAProxy, the Celery workers) into ``directory``,
    for a look at what happened."""
    shutil.rmtree(directory, ignore_errors=True)
    shutil.copytree(topology.var / "log", directory)
    for log in Path(workers.directory).glob("*.log"):
        shutil.copy(log, directory / log.name)
    if isinstance(topology, RelStorageFaults):
        shutil.copy(topology.cluster.log, directory / "postgresql.log")
    print(f"{topology.kind}: the logs are in {directory}", flush=True)


def print_table(rows):
    header = (
        "database",
        "fault",
        "committed",
        "arrived",
        "lost",
        "run twice",
        "saves refused",
        "outbox",
        "by frontend",
        "seconds",
    )
    lines = [header] + [
        (
            row.database,
            row.fault,
            str(row.committed),
            str(row.arrived),
            str(len(row.lost)),
            str(row.twice),
            str(row.refused),
            str(row.kept),
            str(row.frontend),
            f"{row.seconds:.0f}",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rule = "  ".join("=" * width for width in widths)
    print(rule)
    for number, line in enumerate(lines):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        if number == 0:
            print(rule)
    print(rule, flush=True)


def run_matrix(databases, faults, broker_down=30, drain=180):
    """Run ``faults`` on each of ``databases``; print each row as it is
    measured, then the table; return the rows."""
    redis = DurableRedisLayer(name="fault_matrix:Redis")
    workers = TwoWorkersLayer(bases=(redis,), name="fault_matrix:CeleryWorkers")
    layers = {
        "zeo": ZEOFaults(bases=(workers,), name="fault_matrix:ZEO"),
        "relstorage": RelStorageFaults(bases=(workers,), name="fault_matrix:RelStorage"),
    }
    rows = []
    started = time.monotonic()
    redis.setUp()
    try:
        workers.setUp()
        try:
            for database in databases:
                topology = layers[database]
                print(f"{database}: starting the topology", flush=True)
                topology.setUp()
                try:
                    matrix = Matrix(topology, redis, workers, broker_down, drain)
                    for fault in faults:
                        print(f"{database}: {fault} ...", flush=True)
                        row = matrix.run(fault)
                        rows.append(row)
                        print(
                            f"{database}: {fault}: {row.committed} committed, {row.arrived} arrived, "
                            f"{row.twice} run twice, {row.refused} saves refused, {row.kept} kept in the outbox, "
                            f"{row.frontend} jobs done by plone-frontend ({row.seconds:.0f} s)",
                            flush=True,
                        )
                        for line in row.refusals + [f"lost: {item}" for item in row.lost]:
                            print("   ", line, flush=True)
                finally:
                    keep_logs(topology, workers, Path.cwd() / "var" / "fault-matrix" / database)
                    topology.tearDown()
        finally:
            workers.tearDown()
    finally:
        redis.tearDown()
    print_table(rows)
    print(f"fault matrix: {time.monotonic() - started:.0f} s", flush=True)
    return rows
