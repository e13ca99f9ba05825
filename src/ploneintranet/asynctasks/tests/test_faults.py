"""Jobs survive the faults of the real services around them.

Each test takes a real process away in the middle of the work (the Celery
worker, the Plone WSGI server, Redis) or makes Plone fail, brings it back,
and checks what a user would notice: every job's effect is there, or, when the
broker is down at commit, the user's save is refused as a whole. Jobs run at
least once, so duplicates are allowed and reported.
"""

from celery.result import AsyncResult
import json
import os
from plone.testing.zope import WSGI_SERVER_FIXTURE
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks import ledger
from ploneintranet.asynctasks import outbox
from ploneintranet.asynctasks.testing import CELERY_WORKER_FIXTURE
from ploneintranet.asynctasks.testing import REDIS_SERVER_FIXTURE
from ploneintranet.asynctasks.testing import CountingJobServer
from ploneintranet.asynctasks.testing import free_port
from ploneintranet.asynctasks.testing import start_redis_server
from ploneintranet.asynctasks.testing import stop_process
from ploneintranet.asynctasks.testing import wait_until
from ploneintranet.asynctasks.tests import fault_views
from ploneintranet.asynctasks.tests.base import PipelineTestCase
from ploneintranet.asynctasks.tests.test_views import authenticator_in
import redis
import shutil
import tempfile
import time
import transaction
from unittest import mock


def taken_task_ids(redis_url):
    """Ids of the jobs workers have taken from Redis and not acknowledged."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        # kombu keeps each taken message in this hash until it is acknowledged
        return {json.loads(raw)[0]["headers"]["id"] for raw in client.hvals("unacked")}
    finally:
        client.close()


class FaultTestCase(PipelineTestCase):
    def setUp(self):
        super().setUp()
        fault_views.prepare_runs(self.doc)
        transaction.commit()
        self.started = time.monotonic()

    def runs(self):
        return fault_views.runs(self.fresh(self.doc))

    def enqueue_many(self, count, prefix, **options):
        """Enqueue ``count`` counted jobs in one request (with Celery
        ``options`` ``queue`` or ``countdown``); return their ids."""
        response = self.get(
            f"{self.doc_url}/@@test-enqueue-many",
            params=dict(options, count=count, prefix=prefix),
            auth=self.owner,
        )
        self.assertEqual(response.status_code, 200, response.text[:500])
        ids = response.text.split()
        self.assertEqual(len(ids), count)
        return ids

    def wait_for_runs(self, keys, timeout, message):
        """Wait until a job with each of ``keys`` ran; return the runs."""
        wait_until(lambda: set(keys) <= set(self.runs()), timeout, interval=0.2, message=message)
        return self.runs()

    def duplicates(self, runs):
        return sum(runs.values()) - len(runs)

    def report(self, what, runs):
        print(
            f"\n{self.id()}: {what}; {len(runs)} keys, "
            f"{self.duplicates(runs)} duplicate run(s), "
            f"{time.monotonic() - self.started:.1f} s"
        )


class TestWorkerKilled(FaultTestCase):
    count = 300

    def test_jobs_of_a_killed_worker_run_on_a_new_one(self):
        keys = [f"kill-{index}" for index in range(self.count)]
        self.enqueue_many(self.count, "kill")
        wait_until(lambda: len(self.runs()) >= 30, 30, interval=0.02, message="30 jobs")
        CELERY_WORKER_FIXTURE.kill_worker()
        try:
            ran_before = len(self.runs())
            taken = taken_task_ids(self.layer["redis_url"])
        finally:
            CELERY_WORKER_FIXTURE.start_worker()
        self.assertLess(ran_before, self.count, "all jobs ran before the kill")
        self.assertTrue(taken, "the killed worker had taken no job")

        # Redis hands the killed worker's jobs out again after the visibility
        # timeout (10 s), at the new worker's next sweep (every 10 s).
        self.wait_for_runs(keys, 45, f"all {self.count} jobs")
        wait_until(
            lambda: all(self.succeeded(task_id) for task_id in taken),
            30,
            interval=0.5,
            message="the new worker to run the jobs the killed one had taken",
        )
        runs = self.runs()
        self.report(f"killed after {ran_before} runs, holding {len(taken)} job(s)", runs)
        self.assertEqual(set(runs), set(keys))
        # only a job taken by the killed worker can have run twice
        self.assertLessEqual(self.duplicates(runs), len(taken), runs)

    def succeeded(self, task_id):
        return f"{celerytasks.post.name}[{task_id}] succeeded" in self.celery_log()


class TestLostOnTheWay(FaultTestCase):
    """A worker killed between taking a job off its queue (``BRPOP``) and
    recording it as taken (``unacked``) loses it; the ledger sends it again."""

    def test_a_job_that_vanished_is_sent_again_and_only_that_one(self):
        CELERY_WORKER_FIXTURE.kill_worker()  # nothing takes the jobs meanwhile
        client = redis.Redis.from_url(self.layer["redis_url"], socket_timeout=5)
        try:
            self.enqueue_many(3, "lost")
            (held,) = self.enqueue_many(1, "held", countdown=300)
            (parked,) = self.enqueue_many(1, "parked", queue="parked")
            # what a dying worker's BRPOP does: the message leaves the queue
            # and is recorded nowhere
            vanished = json.loads(client.rpop("high"))["headers"]["id"]
        finally:
            CELERY_WORKER_FIXTURE.start_worker()
        keys = [f"lost-{index}" for index in range(3)]
        try:
            self.wait_for_runs(keys, 45, "the vanished job to be sent again")
            resent = f"[{vanished}] for {self.doc_url}/@@test-count-run vanished from the queues"
            self.assertIn(resent, self.celery_log())
            # Two more sweeps (2 s apart): the job a worker holds for its
            # countdown and the one in a queue no worker reads stay as they are.
            time.sleep(6)
            log = self.celery_log()
            self.assertEqual(log.count("vanished from the queues"), 1, log[-3000:])
            runs = self.runs()
            self.assertEqual(runs, {key: 1 for key in keys})
            self.assertEqual(client.llen("parked"), 1)
        finally:
            # neither job is to run: out of the queues and out of the ledger
            celerytasks.app.control.revoke(held)
            client.delete("parked")
            for task_id in held, parked:
                ledger.forget(celerytasks.app, task_id)
            client.close()


class TestPloneStopped(FaultTestCase):
    count = 100
    outage = 10

    def test_jobs_complete_when_plone_is_back(self):
        keys = [f"down-{index}" for index in range(self.count)]
        ids = self.enqueue_many(self.count, "down")
        wait_until(lambda: len(self.runs()) >= 5, 30, interval=0.02, message="5 jobs")
        layer = WSGI_SERVER_FIXTURE
        port, conf_dir = layer.port, layer._wsgi_conf_dir
        layer.server.shutdown()
        try:
            ran_before = len(self.runs())
            time.sleep(self.outage)
        finally:
            layer.setUpServer()  # a new server on layer.port
            shutil.rmtree(conf_dir, ignore_errors=True)
        # the jobs' urls name the port, so the new server must listen on it
        self.assertEqual(layer.server.socket.getsockname()[1], port)
        self.assertEqual(self.layer["port"], port)
        self.assertLess(ran_before, self.count, "all jobs ran before Plone stopped")

        runs = self.wait_for_runs(keys, 45, f"all {self.count} jobs")
        statuses = [AsyncResult(i, app=celerytasks.app).get(timeout=30) for i in ids]
        self.report(f"Plone stopped {self.outage} s after {ran_before} runs", runs)
        self.assertEqual(set(runs), set(keys))
        self.assertEqual(statuses, [200] * self.count)
        log = self.celery_log()
        retried = [i for i in ids if f"{celerytasks.post.name}[{i}] retry: " in log]
        self.assertTrue(retried, "no job was retried: Plone was not stopped in time")
        self.assertIn("ConnectionError", log)


class TestBrokerDownAtCommit(FaultTestCase):
    def retitle(self, title, key):
        """POST a new title and a job with ``key`` while logged in; the response."""
        url = f"{self.doc_url}/@@test-retitle-and-enqueue"
        token = authenticator_in(self.get(url, auth=self.owner).text)
        self.assertTrue(token)
        return self.post(url, auth=self.owner, data={"_authenticator": token, "title": title, "key": key})

    def test_save_succeeds_and_its_jobs_wait_in_the_outbox_until_redis_is_back(self):
        REDIS_SERVER_FIXTURE.stop_server()
        try:
            with mock.patch.object(celeryconfig, "ASYNC_OUTBOX_RETRY", 0):
                saved = self.retitle("Edit while down", "while-down")
                self.assertEqual(saved.status_code, 200, saved.text[:500])
                self.assertEqual(self.fresh(self.doc).title, "Edit while down")
                jobs, since = outbox.waiting(self.fresh(self.portal))
                self.assertEqual(jobs, 1)
                self.assertLess(time.time() - since, 60)
                self.get(self.doc_url, auth=self.owner)  # still down: the job waits
                self.assertEqual(outbox.waiting(self.fresh(self.portal))[0], 1)
        finally:
            REDIS_SERVER_FIXTURE.start_server()
        # Neither Plone nor the worker is restarted: the next request sends it.
        with mock.patch.object(celeryconfig, "ASYNC_OUTBOX_RETRY", 0):
            self.assertEqual(self.get(self.doc_url, auth=self.owner).status_code, 200)
        self.assertEqual(AsyncResult(saved.text, app=celerytasks.app).get(timeout=45), 200)
        self.assertEqual(outbox.waiting(self.fresh(self.portal)), (0, None))
        runs = self.runs()
        self.report("Redis stopped at commit, the job kept", runs)
        self.assertEqual(runs, {"while-down": 1})

    def test_redis_stopping_between_the_check_and_the_send_keeps_the_job(self):
        # the check passes, Redis stops before the committed job is sent: the
        # job goes into the outbox after the request (found by make faults)
        self.addCleanup(setattr, fault_views, "after_the_broker_check", None)
        fault_views.after_the_broker_check = REDIS_SERVER_FIXTURE.stop_server
        try:
            with mock.patch.object(celeryconfig, "ASYNC_OUTBOX_RETRY", 0):
                started = time.monotonic()
                saved = self.retitle("Edit as Redis stops", "as-it-stops")
                took = time.monotonic() - started
                fault_views.after_the_broker_check = None
                self.assertEqual(saved.status_code, 200, saved.text[:500])
                self.assertEqual(self.fresh(self.doc).title, "Edit as Redis stops")
                self.assertEqual(outbox.waiting(self.fresh(self.portal))[0], 1)
        finally:
            REDIS_SERVER_FIXTURE.start_server()
        with mock.patch.object(celeryconfig, "ASYNC_OUTBOX_RETRY", 0):
            self.assertEqual(self.get(self.doc_url, auth=self.owner).status_code, 200)
        self.assertEqual(AsyncResult(saved.text, app=celerytasks.app).get(timeout=45), 200)
        self.assertEqual(outbox.waiting(self.fresh(self.portal)), (0, None))
        runs = self.runs()
        self.report(f"Redis stopped after the check; the save took {took:.1f} s", runs)
        self.assertEqual(runs, {"as-it-stops": 1})
        # no retrying of a broker that is down in the user's request
        self.assertLess(took, 10)

    def test_with_refuse_the_save_is_refused_as_a_whole(self):
        REDIS_SERVER_FIXTURE.stop_server()
        try:
            with mock.patch.object(celeryconfig, "ASYNC_WHEN_BROKER_DOWN", "refuse"):
                refused = self.retitle("Lost edit", "while-down")
        finally:
            REDIS_SERVER_FIXTURE.start_server()
        self.assertEqual(refused.status_code, 500, refused.text[:500])
        self.assertIn("AsyncTaskError", refused.text)
        self.assertEqual(self.fresh(self.doc).title, "Plain page")
        self.assertEqual(outbox.waiting(self.fresh(self.portal)), (0, None))

        # Neither Plone nor the worker is restarted: both reconnect by themselves.
        saved = self.retitle("Kept edit", "after")
        self.assertEqual(saved.status_code, 200, saved.text[:500])
        self.assertEqual(self.fresh(self.doc).title, "Kept edit")
        self.assertEqual(AsyncResult(saved.text, app=celerytasks.app).get(timeout=45), 200)
        runs = self.runs()
        self.report("Redis stopped at commit, the save refused", runs)
        # the refused save left no job behind
        self.assertEqual(runs, {"after": 1})


class TestConflictError(FaultTestCase):
    # Zope retries a ConflictError 3 times within a request (4 attempts), so
    # 10 failures take 3 requests: Celery retries the job twice.
    failures = 10

    def test_job_is_retried_by_celery_until_the_conflict_passes(self):
        prefix = f"conflict-{time.time()}"
        response = self.get(
            f"{self.doc_url}/@@test-enqueue-many?count=1&prefix={prefix}"
            f"&url=@@test-conflicting-job&failures={self.failures}",
            auth=self.owner,
        )
        self.assertEqual(response.status_code, 200, response.text[:500])
        task_id = response.text.strip()
        result = AsyncResult(task_id, app=celerytasks.app)
        self.assertEqual(result.get(timeout=50), 200)

        key = f"{prefix}-0"
        runs = self.runs()
        self.report(f"{fault_views.conflict_attempts[key]} attempts", runs)
        self.assertEqual(runs, {key: 1})
        self.assertEqual(fault_views.conflict_attempts[key], self.failures + 1)
        retries = self.celery_log().count(f"{celerytasks.post.name}[{task_id}] retry:")
        self.assertEqual(retries, 2, self.celery_log()[-3000:])


class TestRevoked(FaultTestCase):
    def test_a_revoked_job_leaves_the_ledger_and_is_not_sent_again(self):
        task_id = f"revoked-{time.monotonic_ns()}"
        celerytasks.app.control.revoke(task_id)
        wait_until(
            lambda: f"Tasks flagged as revoked: {task_id}" in self.celery_log(),
            15,
            message="the worker to note the revoke",
        )
        # In a queue the worker does not consume yet: an idle worker would
        # otherwise discard the job before the test sees it in the ledger.
        queue = f"revoked-{time.monotonic_ns()}"
        celerytasks.post.apply_async(
            (f"{self.doc_url}/@@test-count-run", {"key": "revoked"}, {}, {}),
            task_id=task_id,
            queue=queue,
        )
        client = redis.Redis.from_url(self.layer["redis_url"], socket_timeout=5)
        try:
            self.assertTrue(client.hexists(ledger.JOBS, task_id))
            celerytasks.app.control.add_consumer(queue, reply=True, timeout=5)
            wait_until(
                lambda: not client.hexists(ledger.JOBS, task_id),
                15,
                message="the discarded job to leave the ledger",
            )
        finally:
            celerytasks.app.control.cancel_consumer(queue, reply=True, timeout=5)
            client.close()
        time.sleep(6)  # three sweeps
        log = self.celery_log()
        self.assertIn(f"Discarding revoked task: {celerytasks.post.name}[{task_id}]", log)
        self.assertNotIn(f"[{task_id}] for", log)  # never sent again
        self.assertNotIn("revoked", self.runs())


def jobs_in_redis(redis_url, task_ids):
    """The ``task_ids`` Redis still has a copy of: taken by a worker, waiting
    in a queue, or in the ledger (which would send it again)."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        waiting = [raw for queue in celeryconfig.ASYNC_QUEUES for raw in client.lrange(queue, 0, -1)]
        found = {json.loads(raw)["headers"]["id"] for raw in waiting}
        found |= {task_id.decode() for task_id in client.hkeys(ledger.JOBS)}
    finally:
        client.close()
    return (found | taken_task_ids(redis_url)) & set(task_ids)


class TestRedisRestartWhileJobsAreHeld(FaultTestCase):
    """Redis restarts while the worker holds jobs: two waiting for their
    countdown and one running. The worker stays up (Celery 5.7.0 and kombu
    5.7.0 alone stop it), and each job runs once
    (:mod:`ploneintranet.asynctasks.brokerloss`)."""

    countdown = 6  # below the worker's visibility timeout, 10 s
    running_seconds = 4

    def setUp(self):
        super().setUp()
        self.slow = CountingJobServer(self.running_seconds)
        self.addCleanup(self.slow.close)
        self.addCleanup(self.restart_a_dead_worker)

    def restart_a_dead_worker(self):
        # the layer's worker serves the tests that follow
        if CELERY_WORKER_FIXTURE.process.poll() is not None:
            CELERY_WORKER_FIXTURE.start_worker()

    def test_redis_restarted_with_its_data(self):
        self.restart_redis_while_holding_jobs(keep_data=True, outcome="back in its queue")

    def test_redis_restarted_with_its_data_and_the_jobs_handed_out_again(self):
        # the outage outlasted the visibility timeout: the restarted Redis
        # gave the held jobs back to their queues; the worker's copies are
        # not sent a second time (make faults counted them twice before)
        self.restart_redis_while_holding_jobs(
            keep_data=True, outcome="Redis handed it out again meanwhile: left to that", hand_back=True
        )

    def test_redis_restarted_empty(self):
        self.restart_redis_while_holding_jobs(
            keep_data=False, outcome="Redis restarted without it: sent again from the worker's copy"
        )

    def restart_redis_while_holding_jobs(self, keep_data, outcome, hand_back=False):
        redis_url, worker = self.layer["redis_url"], CELERY_WORKER_FIXTURE.process
        held = self.enqueue_many(2, "held", countdown=self.countdown)
        running = celerytasks.post.apply_async((self.slow.url, {"key": "running"}, {}, {})).id
        wait_until(
            lambda: set(held) <= taken_task_ids(redis_url) and self.slow.posts,
            20,
            interval=0.1,
            message="the worker to hold two jobs and run one",
        )
        if keep_data:
            self.save_redis(redis_url)
        if hand_back:
            self.hand_back_in_the_dump(held)
        REDIS_SERVER_FIXTURE.stop_server()
        REDIS_SERVER_FIXTURE.start_server()
        back = time.monotonic()
        keys = {"held-0", "held-1"}

        def all_done():
            if worker.poll() is not None:
                raise AssertionError(f"the worker exited:\n{self.celery_log()[-3000:]}")
            return keys <= set(self.runs()) and not jobs_in_redis(redis_url, held + [running])

        wait_until(all_done, 45, interval=0.2, message="each job to run and leave Redis")
        runs = self.runs()
        self.report(f"held jobs ran {time.monotonic() - back:.1f} s after Redis was back", runs)
        self.assertEqual(runs, {"held-0": 1, "held-1": 1})
        self.assertEqual(self.slow.posts, {"running": 1})
        self.assertIsNone(worker.poll())
        log = self.celery_log()
        for task_id in held:
            self.assertIn(f"[{task_id}] was held when the connection to Redis broke; {outcome}", log)

    def hand_back_in_the_dump(self, task_ids):
        """Make the Redis data that the restarted Redis loads hold the jobs of
        ``task_ids`` in their queues instead of among the taken ones, as
        kombu leaves them when the visibility timeout passes: edited in a
        redis-server of its own, not in the one the worker uses."""
        dump = os.path.join(REDIS_SERVER_FIXTURE.directory, "dump.rdb")
        scratch = tempfile.mkdtemp(prefix="asynctasks-dump-")
        self.addCleanup(shutil.rmtree, scratch, ignore_errors=True)
        shutil.copy(dump, scratch)
        port = free_port()
        process = start_redis_server(port, scratch)
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
        try:
            for tag, raw in client.hgetall("unacked").items():
                payload, _exchange, routing_key = json.loads(raw)
                if payload["headers"]["id"] in task_ids:
                    client.lpush(routing_key, json.dumps(payload))
                    client.hdel("unacked", tag)
                    client.zrem("unacked_index", tag)
            url = f"redis://127.0.0.1:{port}/0"
            self.assertEqual(set(task_ids) & taken_task_ids(url), set())
            waiting = [
                json.loads(raw)["headers"]["id"]
                for queue in celeryconfig.ASYNC_QUEUES
                for raw in client.lrange(queue, 0, -1)
            ]
            self.assertEqual(sorted(waiting), sorted(task_ids))
            client.save()
        finally:
            client.close()
            stop_process(process)
        shutil.copy(os.path.join(scratch, "dump.rdb"), dump)

    def save_redis(self, redis_url):
        """Write Redis's data to disk, as a Redis with snapshots does when it
        stops, so the restarted one loads it; the file goes afterwards."""
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        try:
            client.save()
        finally:
            client.close()
        dump = os.path.join(REDIS_SERVER_FIXTURE.directory, "dump.rdb")
        self.addCleanup(os.remove, dump)
