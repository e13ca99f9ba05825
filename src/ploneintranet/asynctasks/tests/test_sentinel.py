"""Redis with Sentinel: a master, a replica and three sentinels of the
tests' own on free loopback ports (:class:`~ploneintranet.asynctasks.testing.RedisSentinels`).

The tests of the Redis pipeline that hold for any broker run here again as
they are; ``@@async-status`` is all OK with the ledger reached through the
sentinels; and under steady job traffic the master is SIGKILLed: Sentinel
promotes the replica, the Plone side and the worker carry on without a
restart, and the jobs committed before the kill are counted as they arrive.
"""

import json
import logging
import os
from plone.app.testing import FunctionalTesting
from plone.testing.zope import WSGI_SERVER_FIXTURE
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks.delivery import delivery_for
from ploneintranet.asynctasks.errors import AsyncTaskError
from ploneintranet.asynctasks.jobqueue import jobs_of_transaction
from ploneintranet.asynctasks.testing import ASYNC_FIXTURE
from ploneintranet.asynctasks.testing import SENTINEL_FIXTURE
from ploneintranet.asynctasks.testing import SENTINEL_WORKER_FIXTURE
from ploneintranet.asynctasks.testing import CountingJobServer
from ploneintranet.asynctasks.testing import PushServerLayer
from ploneintranet.asynctasks.testing import RedisSentinels
from ploneintranet.asynctasks.testing import log_tail
from ploneintranet.asynctasks.testing import point_celery_app_at
from ploneintranet.asynctasks.testing import restore_celery_app
from ploneintranet.asynctasks.testing import start_celery_worker
from ploneintranet.asynctasks.testing import stop_process
from ploneintranet.asynctasks.tests import test_faults
from ploneintranet.asynctasks.tests import test_jobqueue
from ploneintranet.asynctasks.tests import test_previews
from ploneintranet.asynctasks.tests import test_push
from ploneintranet.asynctasks.tests.base import PipelineTestCase
from ploneintranet.asynctasks.tests.layers import TEST_VIEWS_FIXTURE
from ploneintranet.asynctasks.tests.reuse import redis_layers_left_out
from ploneintranet.asynctasks.tests.test_status import CHECKS
from ploneintranet.asynctasks.wire import Job
import redis
import shutil
import signal
import statistics
import tempfile
import threading
import time
import transaction
import unittest
from unittest import mock


SENTINEL_PIPELINE_TESTING = FunctionalTesting(
    bases=(SENTINEL_WORKER_FIXTURE, TEST_VIEWS_FIXTURE, WSGI_SERVER_FIXTURE),
    name="ploneintranet.asynctasks:SentinelPipeline",
)
SENTINEL_PUSH_FIXTURE = PushServerLayer(
    bases=(SENTINEL_FIXTURE, WSGI_SERVER_FIXTURE), name="ploneintranet.asynctasks:SentinelPushServer"
)
SENTINEL_PUSH_TESTING = FunctionalTesting(
    bases=(SENTINEL_WORKER_FIXTURE, ASYNC_FIXTURE, SENTINEL_PUSH_FIXTURE),
    name="ploneintranet.asynctasks:SentinelPush",
)

# the reused tests' own layers are not set up for this module (tests/reuse.py)
globals().update(redis_layers_left_out())


# --- the tests of the Redis pipeline that hold for any broker, on Sentinel ---


class TestJobsWaitForTheCommit(test_jobqueue.TestJobsWaitForTheCommit):
    layer = SENTINEL_PIPELINE_TESTING


class TestDebounce(test_jobqueue.TestDebounce):
    layer = SENTINEL_PIPELINE_TESTING


class TestConflictError(test_faults.TestConflictError):
    layer = SENTINEL_PIPELINE_TESTING


class TestPreviewSwitch(test_previews.TestSwitch):
    layer = SENTINEL_PIPELINE_TESTING


class TestPreviewJobPushes(test_push.TestPreviewJobPushes):
    layer = SENTINEL_PUSH_TESTING


class TestStatus(PipelineTestCase):
    layer = SENTINEL_PIPELINE_TESTING

    def test_every_check_is_ok_through_the_sentinels(self):
        url = f"{self.portal_url}/@@async-status"
        report = self.get(url, auth=self.owner, params={"format": "json"}).json()
        response = self.post(url, auth=self.owner, data={"format": "json", "_authenticator": report["authenticator"]})
        self.assertEqual(response.status_code, 200, response.text)
        report = response.json()
        self.assertEqual([c["name"] for c in report["checks"]], CHECKS)
        self.assertEqual([c["status"] for c in report["checks"]], ["OK"] * len(CHECKS), report)
        self.assertIn("sentinel://127.0.0.1:", report["checks"][1]["message"])
        self.assertRegex(report["checks"][-1]["message"], r"^none: \d+ job\(s\) sent")


class TestWorkerKilled(test_faults.FaultTestCase):
    layer = SENTINEL_PIPELINE_TESTING
    count = 200

    def test_jobs_of_a_killed_worker_run_on_a_new_one(self):
        keys = [f"kill-{index}" for index in range(self.count)]
        self.enqueue_many(self.count, "kill")
        test_faults.wait_until(lambda: len(self.runs()) >= 20, 30, interval=0.02, message="20 jobs")
        SENTINEL_WORKER_FIXTURE.kill_worker()
        try:
            ran_before = len(self.runs())
        finally:
            SENTINEL_WORKER_FIXTURE.start_worker()
        self.assertLess(ran_before, self.count, "all jobs ran before the kill")
        # the master hands the killed worker's jobs out again after the
        # visibility timeout (10 s)
        runs = self.wait_for_runs(keys, 60, f"all {self.count} jobs")
        self.report(f"killed after {ran_before} runs", runs)
        self.assertEqual(set(runs), set(keys))


class TestWaitForTheReplica(unittest.TestCase):
    """``ASYNC_REDIS_WAIT_REPLICAS``: the round trip that writes a
    transaction's jobs returns once the replica has them."""

    layer = SENTINEL_FIXTURE
    queue = "asynctasks-test-wait"

    def setUp(self):
        sentinels = self.layer["sentinels"]
        master = sentinels.master_port()
        (self.replica,) = [port for port in sentinels.servers if port != master]
        self.process = sentinels.servers[self.replica]
        self.client = redis.Redis(host="127.0.0.1", port=master, socket_timeout=5)
        self.addCleanup(self.client.close)
        self.addCleanup(self.client.flushdb)
        for name, value in (("ASYNC_REDIS_WAIT_REPLICAS", 1), ("ASYNC_REDIS_WAIT_TIMEOUT", 0.5)):
            patcher = mock.patch.object(celeryconfig, name, value)
            patcher.start()
            self.addCleanup(patcher.stop)

    def send(self, count):
        jobs = [
            Job.create(celerytasks.post, ("http://127.0.0.1:1/job", {"key": str(index)}, {}, {}), {"queue": self.queue})
            for index in range(count)
        ]
        started = time.monotonic()
        delivery_for(celerytasks.app).send(jobs)
        return jobs, time.monotonic() - started

    def test_the_jobs_are_on_the_replica_when_plone_goes_on(self):
        replica = redis.Redis(host="127.0.0.1", port=self.replica, socket_timeout=5)
        self.addCleanup(replica.close)
        with self.assertNoLogs("ploneintranet.asynctasks", "WARNING"):
            jobs, seconds = self.send(5)
        self.assertLess(seconds, 0.5)
        self.assertEqual(replica.llen(self.queue), 5)  # read at once, not after a while

    def test_a_replica_that_does_not_answer_in_time_is_logged(self):
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            with self.assertLogs("ploneintranet.asynctasks", "WARNING") as logs:
                jobs, seconds = self.send(2)
        finally:
            os.kill(self.process.pid, signal.SIGCONT)
        self.assertGreaterEqual(seconds, 0.5)
        self.assertEqual(self.client.llen(self.queue), 2)  # sent all the same
        (warning,) = logs.output
        self.assertIn("reached 0 of the 1 replica(s) of ASYNC_REDIS_WAIT_REPLICAS", warning)
        for job in jobs:
            self.assertIn(job.id, warning)


# --- failover under steady traffic --------------------------------------------


class LostJobs(logging.Handler):
    """Collects the task ids of the jobs logged as ``LOST JOB``."""

    def __init__(self):
        super().__init__()
        self.ids = set()

    def emit(self, record):
        if str(record.msg).startswith("LOST JOB") and record.args and len(record.args) > 1:
            self.ids.add(record.args[1])


class TestFailover(unittest.TestCase):
    """Transactions of five jobs each, one after the other, as Plone commits
    them (the jobs' data manager in a real transaction, in this process);
    four seconds in, the master is SIGKILLed. Each job posts its key to a
    counting server in Plone's place, which takes 50 ms for it."""

    duration = 14
    kill_at = 4
    per_transaction = 5
    #: Seconds between two transactions: about 100 jobs a second.
    pause = 0.05
    #: Seconds each job takes: the worker's two processes run about 40 a
    #: second, so jobs wait in the queue, as under load.
    job_seconds = 0.05

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="asynctasks-failover-")
        self.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)
        self.sentinels = RedisSentinels(self.directory)
        self.addCleanup(self.sentinels.stop)
        self.sentinels.start()
        url, options = self.sentinels.url, self.sentinels.options
        self.addCleanup(restore_celery_app, point_celery_app_at(url, url, options))
        self.counter = CountingJobServer(self.job_seconds)
        self.addCleanup(self.counter.close)
        self.lost = LostJobs()
        logging.getLogger("ploneintranet.asynctasks").addHandler(self.lost)
        self.addCleanup(logging.getLogger("ploneintranet.asynctasks").removeHandler, self.lost)

    def start_worker(self, wait_replicas):
        self.worker = start_celery_worker(
            self.sentinels.url,
            self.directory,
            f"failover-{os.getpid()}",
            BROKER_TRANSPORT_OPTIONS=json.dumps(self.sentinels.options),
            ASYNC_REDIS_WAIT_REPLICAS=wait_replicas,
            ASYNC_SWEEP_INTERVAL=2,
            ASYNC_VISIBILITY_TIMEOUT=10,
            ASYNC_MAX_RETRIES=30,
            ASYNC_RETRY_BACKOFF_MAX=2,
        )
        self.addCleanup(stop_process, self.worker)

    def traffic(self, stopping, sent):
        """Commit transactions of jobs until ``stopping`` is set; note each
        key in ``sent["committed"]`` or ``sent["refused"]`` with the time."""
        number = 0
        while not stopping.is_set():
            keys = {}
            for index in range(self.per_transaction):
                key = f"{number}-{index}"
                job = Job.create(celerytasks.post, (self.counter.url, {"key": key}, {}, {}), {})
                keys[jobs_of_transaction().add(job).id] = key
            number += 1
            started = time.monotonic()
            try:
                transaction.commit()
            except AsyncTaskError:
                # the vote found no master: the user is told, nothing is saved
                transaction.abort()
                sent["refused"].extend((started, key) for key in keys.values())
                time.sleep(0.05)
                continue
            sent["committed"].extend((started, key) for key in keys.values())
            sent["ids"].update(keys)
            sent["seconds"].append(time.monotonic() - started)
            time.sleep(self.pause)  # steady, and no more than the worker keeps up with

    def fail_over(self, wait_replicas, failover_wait, lag):
        """Run the traffic, kill the master, bring it back as a replica;
        return what was sent and when the master died and was replaced.
        For ``lag`` seconds before the kill the replica is stopped (SIGSTOP,
        SIGCONT once the master is dead) behind a full replication link, as a
        replica behind its master."""
        self.start_worker(wait_replicas)
        sent = {"committed": [], "refused": [], "ids": {}, "seconds": []}
        stopping = threading.Event()
        thread = threading.Thread(target=self.traffic, args=(stopping, sent), daemon=True)
        started = time.monotonic()
        with (
            mock.patch.object(celeryconfig, "ASYNC_REDIS_WAIT_REPLICAS", wait_replicas),
            mock.patch.object(celeryconfig, "ASYNC_SENTINEL_FAILOVER_WAIT", failover_wait),
        ):
            thread.start()
            time.sleep(self.kill_at - lag)
            before = len(sent["seconds"])
            master = self.sentinels.master_port()
            (replica,) = (self.sentinels.servers[port] for port in self.sentinels.servers if port != master)
            if lag:
                os.kill(replica.pid, signal.SIGSTOP)
                self.fill_replication_link(master)
                time.sleep(lag)
            old = self.sentinels.kill_master()
            killed = time.monotonic()
            os.kill(replica.pid, signal.SIGCONT)
            self.sentinels.wait_for_failover(old)
            promoted = time.monotonic()
            self.sentinels.restart(old)  # it comes back, and follows the new master
            time.sleep(max(0, started + self.duration - time.monotonic()))
            stopping.set()
            thread.join(30)
        sent["before"] = sent["seconds"][:before]
        return sent, killed, promoted

    def fill_replication_link(self, master):
        """Write 16 MB to the master, more than the kernel's socket buffers
        between it and a stopped replica hold: what the master writes next
        waits in the master's own memory, as behind a slow network."""
        client = redis.Redis(host="127.0.0.1", port=master, socket_timeout=5)
        try:
            client.set("asynctasks-test-filler", b"x" * (16 << 20))
        finally:
            client.close()

    def arrived(self, committed, quiet=30):
        """Wait until every committed key arrived, or none arrived for
        ``quiet`` seconds (more than the visibility timeout and two sweeps);
        return the keys that arrived."""
        count, since = -1, time.monotonic()
        while not committed <= set(self.counter.posts) and time.monotonic() - since < quiet:
            if len(self.counter.posts) != count:
                count, since = len(self.counter.posts), time.monotonic()
            time.sleep(0.5)
        return committed & set(self.counter.posts)

    def run_failover(self, wait_replicas, failover_wait, lag=0):
        sent, killed, promoted = self.fail_over(wait_replicas, failover_wait, lag)
        committed = {key for _, key in sent["committed"]}
        arrived = self.arrived(committed)
        missing = committed - arrived
        logged = {sent["ids"][task_id] for task_id in self.lost.ids if task_id in sent["ids"]}
        after = {key for started, key in sent["committed"] if started > promoted}
        duplicates = sum(1 for key in arrived if self.counter.posts[key] > 1)
        print(
            f"\n{self.id()}: replica stopped {lag} s before the kill; ASYNC_REDIS_WAIT_REPLICAS={wait_replicas}, "
            f"ASYNC_SENTINEL_FAILOVER_WAIT={failover_wait}; committed {len(committed)} jobs, "
            f"{len(after)} after the failover; refused while no master answered: {len(sent['refused'])}; "
            f"failover {promoted - killed:.1f} s; missing: {len(missing)} (logged as LOST JOB: {len(logged)}); "
            f"arrived twice or more: {duplicates}; commit of {self.per_transaction} jobs before the kill: "
            f"median {statistics.median(sent['before']) * 1000:.2f} ms, "
            f"p99 {sorted(sent['before'])[int(len(sent['before']) * 0.99)] * 1000:.2f} ms"
        )
        # the worker and this process carried on without a restart
        self.assertIsNone(self.worker.poll(), log_tail(os.path.join(self.directory, f"failover-{os.getpid()}.log")))
        self.assertTrue(after, "no transaction committed after the failover")
        self.assertEqual(after - arrived, set(), "jobs committed after the failover did not arrive")
        return missing, logged

    def test_a_master_killed_as_before(self):
        # neither waiting for a replica nor for a new master: measured, not promised
        missing, logged = self.run_failover(0, 0)
        self.assertLessEqual(len(missing), 50)

    def test_a_master_killed_while_its_replica_lags_as_before(self):
        # what the master wrote while the replica was stopped is not on the
        # replica Sentinel promotes: those jobs are lost
        missing, logged = self.run_failover(0, 0, lag=0.5)
        self.assertTrue(missing, "the lagging replica lost nothing: the test did not lag it")

    def test_waiting_for_one_replica_and_a_new_master_loses_nothing(self):
        missing, logged = self.run_failover(1, 60, lag=0.5)
        self.assertEqual(missing, set())
        self.assertEqual(logged, set())
