"""Jobs wait for the user's transaction: sent on commit, never on abort,
identical ones once, debounced ones once after a burst."""

from celery.result import AsyncResult
import contextlib
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks import jobqueue
from ploneintranet.asynctasks.tests.base import PipelineTestCase
from ploneintranet.asynctasks.tests.test_views import authenticator_in
from ploneintranet.asynctasks.tests.views import notes
import time
import unittest


class TestJobsWaitForTheCommit(PipelineTestCase):
    def result_of(self, response):
        self.assertEqual(response.status_code, 200, response.text[:500])
        return AsyncResult(response.text, app=celerytasks.app)

    def enqueue(self, query, auth=None):
        return self.get(f"{self.doc_url}/@@test-enqueue?{query}", auth=auth or self.owner)

    def test_worker_sees_what_the_transaction_saved(self):
        # The user's transaction stays open 1.5 s after enqueueing: a job sent
        # at once would reindex the old title before the new one is saved.
        url = f"{self.doc_url}/@@test-edit-and-reindex"
        token = authenticator_in(self.get(url, auth=self.owner).text)
        response = self.post(
            url,
            auth=self.owner,
            data={"_authenticator": token, "title": "Narwhal plan", "delay": "1.5"},
        )
        self.assertEqual(response.text, "edited")
        self.wait_for(lambda: self.catalog_titles("Narwhal"), "the reindex job")
        self.assertEqual(self.catalog_titles("Narwhal"), ["Narwhal plan"])

    def test_aborted_transaction_sends_nothing(self):
        response = self.enqueue("job=post&note=aborted&fail=1")
        self.assertEqual(response.status_code, 500)
        # A job sent later is received later: once it ran, the first would have.
        self.result_of(self.enqueue("job=post&note=after")).get(timeout=self.job_timeout)
        self.assertEqual(notes(self.fresh(self.doc)), ["after"])
        self.assertNotIn("note=aborted", self.celery_log())

    def test_identical_jobs_of_a_transaction_run_once(self):
        result = self.result_of(self.enqueue("job=post&note=twice&times=3"))
        self.assertEqual(result.get(timeout=self.job_timeout), 200)
        self.result_of(self.enqueue("job=post&note=end")).get(timeout=self.job_timeout)
        self.assertEqual(sorted(notes(self.fresh(self.doc))), ["end", "twice"])


class TestDebounce(PipelineTestCase):
    def test_a_burst_of_saves_runs_the_job_once_after_it(self):
        ids = []
        for _ in range(8):  # one save every 0.2 s, debounce 1 s
            response = self.get(
                f"{self.doc_url}/@@test-enqueue?job=debounced&note=burst", auth=self.owner
            )
            self.assertEqual(response.status_code, 200)
            ids.append(response.text)
            time.sleep(0.2)
        results = [AsyncResult(i, app=celerytasks.app) for i in ids]
        values = [r.get(timeout=self.job_timeout) for r in results]
        self.assertEqual(values, ["superseded"] * 7 + [200])
        self.assertEqual(notes(self.fresh(self.doc)), ["burst"])


class _FailingBatchProducer:
    """A producer whose one round trip for all jobs fails at the end."""

    supports_batch_publish = True
    batching = False

    @contextlib.contextmanager
    def batch(self):
        self.batching = True
        try:
            yield
        finally:
            self.batching = False
        raise ConnectionError("the broker went away")


class _RecordingTask:
    name = "recording"

    def __init__(self):
        self.sent = []

    def apply_async(self, args, producer, **options):
        self.sent.append((args[0], producer.batching))


class TestSendTogether(unittest.TestCase):
    def test_jobs_of_a_failed_round_trip_are_sent_one_by_one(self):
        task = _RecordingTask()
        jobs = [(task, (url, {}, {}, {}), {"task_id": url}, "editor", None) for url in ("a", "b")]
        jobqueue._send_together(_FailingBatchProducer(), jobs)
        self.assertEqual(task.sent, [("a", True), ("b", True), ("a", False), ("b", False)])
