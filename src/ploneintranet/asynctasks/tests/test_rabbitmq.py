"""The whole pipeline on RabbitMQ: a private vhost of this machine's
RabbitMQ as the broker, the results, debounce keys and push channels in a
private Redis, a real Celery worker and Plone over HTTP.

The tests of the Redis pipeline that hold for any broker run here again as
they are (commit-aware enqueue, dedup, debounce, retries, previews, push);
the others show what RabbitMQ does in Redis' place: delayed jobs wait in
RabbitMQ, routing puts each job in its queue, a killed worker loses nothing
without a ledger, and ``@@async-status`` is all OK.
"""

from celery.result import AsyncResult
from datetime import timedelta
from kombu import Connection
from plone.app.testing import FunctionalTesting
from plone.testing.zope import WSGI_SERVER_FIXTURE
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks import ledger
from ploneintranet.asynctasks.testing import ASYNC_FIXTURE
from ploneintranet.asynctasks.testing import RABBITMQ_FIXTURE
from ploneintranet.asynctasks.testing import RABBITMQ_WORKER_FIXTURE
from ploneintranet.asynctasks.testing import CountingJobServer
from ploneintranet.asynctasks.testing import PushServerLayer
from ploneintranet.asynctasks.testing import wait_until
from ploneintranet.asynctasks.tests import test_faults
from ploneintranet.asynctasks.tests import test_jobqueue
from ploneintranet.asynctasks.tests import test_previews
from ploneintranet.asynctasks.tests import test_push
from ploneintranet.asynctasks.tests.base import PipelineTestCase
from ploneintranet.asynctasks.tests.layers import TEST_VIEWS_FIXTURE
from ploneintranet.asynctasks.tests.reuse import redis_layers_left_out
from ploneintranet.asynctasks.tests.test_status import CHECKS
import redis
import time


RABBITMQ_PIPELINE_TESTING = FunctionalTesting(
    bases=(RABBITMQ_WORKER_FIXTURE, TEST_VIEWS_FIXTURE, WSGI_SERVER_FIXTURE),
    name="ploneintranet.asynctasks:RabbitMQPipeline",
)
RABBITMQ_PUSH_FIXTURE = PushServerLayer(
    bases=(RABBITMQ_FIXTURE, WSGI_SERVER_FIXTURE), name="ploneintranet.asynctasks:RabbitMQPushServer"
)
RABBITMQ_PUSH_TESTING = FunctionalTesting(
    bases=(RABBITMQ_WORKER_FIXTURE, ASYNC_FIXTURE, RABBITMQ_PUSH_FIXTURE),
    name="ploneintranet.asynctasks:RabbitMQPush",
)


def ready_messages(broker_url, queues):
    """``{queue: messages waiting in it}`` on RabbitMQ (0 for a queue that
    does not exist)."""
    counts = {}
    with Connection(broker_url, connect_timeout=5) as connection:
        for name in queues:
            channel = connection.channel()  # a missing queue closes its channel
            try:
                counts[name] = channel.queue_declare(queue=name, passive=True).message_count
            except connection.channel_errors:
                counts[name] = 0
            finally:
                if channel.is_open:
                    channel.close()
    return counts


#: The queues where Celery's native delayed delivery keeps delayed jobs.
DELAY_QUEUES = [f"celery_delayed_{level}" for level in range(28)]

# the reused tests' own layers are not set up for this module (tests/reuse.py)
globals().update(redis_layers_left_out())


# --- the tests of the Redis pipeline that hold for any broker, on RabbitMQ ---


class TestJobsWaitForTheCommit(test_jobqueue.TestJobsWaitForTheCommit):
    layer = RABBITMQ_PIPELINE_TESTING


class TestDebounce(test_jobqueue.TestDebounce):
    layer = RABBITMQ_PIPELINE_TESTING


class TestConflictError(test_faults.TestConflictError):
    layer = RABBITMQ_PIPELINE_TESTING


class TestPreviewSwitch(test_previews.TestSwitch):
    layer = RABBITMQ_PIPELINE_TESTING


class TestPreviewJobPushes(test_push.TestPreviewJobPushes):
    layer = RABBITMQ_PUSH_TESTING


# --- what RabbitMQ does in Redis' place ---------------------------------------


class TestStatus(PipelineTestCase):
    layer = RABBITMQ_PIPELINE_TESTING

    def status(self, method="GET", **form):
        send = self.post if method == "POST" else self.get
        return send(
            f"{self.portal_url}/@@async-status",
            auth=self.owner,
            **({"data": form} if method == "POST" else {"params": form}),
        )

    def test_every_check_is_ok_and_says_why_no_ledger_is_needed(self):
        response = self.status(format="json")
        self.assertEqual(response.status_code, 200, response.text)
        report = response.json()
        self.assertEqual([c["status"] for c in report["checks"]], ["OK", "OK", "OK", "OK", "NOT RUN", "NOT RUN", "OK"])
        response = self.status("POST", format="json", _authenticator=report["authenticator"])
        self.assertEqual(response.status_code, 200, response.text)
        report = response.json()
        self.assertIs(report["ok"], True)
        self.assertEqual([c["name"] for c in report["checks"]], CHECKS)
        self.assertEqual([c["status"] for c in report["checks"]], ["OK"] * len(CHECKS), report)
        self.assertIn(self.layer["vhost"], report["checks"][1]["message"])
        self.assertNotIn("guest:guest", response.text)
        self.assertIn("RabbitMQ keeps every job", report["checks"][-1]["message"])


class TestDelays(test_faults.FaultTestCase):
    layer = RABBITMQ_PIPELINE_TESTING

    def test_a_countdown_waits_in_rabbitmq_not_in_the_worker(self):
        started = time.monotonic()
        (task_id,) = self.enqueue_many(1, "later", countdown=4)
        waiting = ready_messages(self.layer["broker_url"], DELAY_QUEUES)
        self.assertEqual(sum(waiting.values()), 1, waiting)
        self.assertNotIn(f"[{task_id}] received", self.celery_log())
        self.wait_for_runs(["later-0"], 30, "the delayed job")
        self.assertGreaterEqual(time.monotonic() - started, 4)
        self.assertEqual(self.runs(), {"later-0": 1})

    def test_a_delay_under_a_second_is_kept(self):
        # Celery's native delayed delivery refuses a countdown under one
        # second (ValueError); the delivery makes it one second
        server = CountingJobServer()
        self.addCleanup(server.close)
        sent = time.monotonic()
        results = [
            celerytasks.post.apply_async((server.url, {"key": "half"}, {}, {}), countdown=0.5),
            celerytasks.post.apply_async(
                (server.url, {"key": "eta"}, {}, {}), eta=celerytasks.app.now() + timedelta(seconds=0.3)
            ),
        ]
        self.assertEqual([result.get(timeout=30) for result in results], [200, 200])
        self.assertGreaterEqual(time.monotonic() - sent, 0.5)
        self.assertEqual(server.posts, {"half": 1, "eta": 1})


class TestRouting(test_faults.FaultTestCase):
    layer = RABBITMQ_PIPELINE_TESTING

    def test_each_job_waits_in_its_queue(self):
        RABBITMQ_WORKER_FIXTURE.kill_worker()  # nothing takes the jobs meanwhile
        try:
            ids = self.enqueue_many(3, "routed")
            added = celerytasks.add.apply_async((2, 3, 0))
            self.assertEqual(ready_messages(self.layer["broker_url"], ["high", "celery"]), {"high": 3, "celery": 1})
        finally:
            RABBITMQ_WORKER_FIXTURE.start_worker()
        self.assertEqual(added.get(timeout=30), 5)
        self.assertEqual([AsyncResult(i, app=celerytasks.app).get(timeout=30) for i in ids], [200] * 3)
        self.assertEqual(self.runs(), {f"routed-{index}": 1 for index in range(3)})


class TestWorkerKilled(test_faults.FaultTestCase):
    layer = RABBITMQ_PIPELINE_TESTING
    count = 300

    def test_jobs_of_a_killed_worker_run_on_a_new_one_without_a_ledger(self):
        keys = [f"kill-{index}" for index in range(self.count)]
        self.enqueue_many(self.count, "kill")
        wait_until(lambda: len(self.runs()) >= 30, 30, interval=0.02, message="30 jobs")
        RABBITMQ_WORKER_FIXTURE.kill_worker()
        try:
            ran_before = len(self.runs())
        finally:
            RABBITMQ_WORKER_FIXTURE.start_worker()
        self.assertLess(ran_before, self.count, "all jobs ran before the kill")
        # RabbitMQ gives the killed worker's jobs back as its connection closes
        runs = self.wait_for_runs(keys, 60, f"all {self.count} jobs")
        self.report(f"killed after {ran_before} runs", runs)
        self.assertEqual(set(runs), set(keys))
        # at most what the killed worker held (2 processes, 1 prefetched each) ran twice
        self.assertLessEqual(self.duplicates(runs), 4, runs)
        self.assertNotIn("vanished from the queues", self.celery_log())
        results = redis.Redis.from_url(self.layer["redis_url"], socket_timeout=5)
        self.addCleanup(results.close)
        self.assertFalse(results.exists(ledger.JOBS))  # no ledger: RabbitMQ keeps them
