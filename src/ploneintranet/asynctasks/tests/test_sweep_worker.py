"""The ledger's sweep in a real worker does not hold up its other jobs.

A sweep that finds many jobs lost (their queue was purged, a worker died
holding a prefetched batch) sends each of them again, about a millisecond
and a half apiece. Run on the worker's timer it ran in the thread that takes
messages from Redis, and a sweep of a thousand jobs stopped every delivery
for 1.3 to 1.9 s (issue 11: ``make bench``'s latency p99 in seconds).
"""

import os
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks import ledger
from ploneintranet.asynctasks.testing import REDIS_SERVER_FIXTURE
from ploneintranet.asynctasks.testing import start_celery_worker
from ploneintranet.asynctasks.testing import stop_process
from ploneintranet.asynctasks.wire import Job
import redis
import shutil
import tempfile
import time
import unittest
from unittest import mock


#: A queue no worker consumes: the lost jobs, sent again, wait there.
NOWHERE = "asynctasks-test-sweep-nowhere"
ARGS = ["http://localhost:8080/Plone/doc/@@count", {}, {}, {}]


class TestSweepBesideJobs(unittest.TestCase):
    layer = REDIS_SERVER_FIXTURE

    #: One sweep's worth: the most a sweep sends again.
    lost = ledger.SWEEP_LIMIT
    #: Longest round trip of a trivial job allowed while the sweep works;
    #: a few milliseconds without one, over a second when the sweep blocks.
    longest = 0.25

    def setUp(self):
        self.app = celerytasks.app
        self.redis = redis.Redis.from_url(self.layer["redis_url"], socket_timeout=5)
        self.redis.flushdb()
        self.addCleanup(self.redis.close)
        self.addCleanup(self.redis.flushdb)
        directory = tempfile.mkdtemp(prefix="asynctasks-sweep-")
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        worker = start_celery_worker(
            self.layer["redis_url"],
            directory,
            f"asynctasks-sweep-{os.getpid()}",
            ASYNC_SWEEP_INTERVAL=1,
        )
        self.addCleanup(stop_process, worker)

    def round_trip(self):
        started = time.monotonic()
        self.assertEqual(celerytasks.add.delay(1, 1, delay=0).get(timeout=30), 2)
        return time.monotonic() - started

    def test_jobs_run_while_a_sweep_sends_lost_jobs_again(self):
        self.round_trip()  # the worker's pool and connections are warm
        # In the ledger, due at once, and in no queue: lost, as after a purge.
        jobs = [
            Job.create(celerytasks.post, ARGS, {"task_id": f"lost-{number}", "queue": NOWHERE})
            for number in range(self.lost)
        ]
        pipe = self.redis.pipeline()
        with mock.patch.object(celeryconfig, "ASYNC_SWEEP_INTERVAL", 0.1):
            ledger.add_to(pipe, self.app, jobs)  # written, not sent
        pipe.execute()
        trips = []
        deadline = time.monotonic() + 60
        # the first sweep finds them missing, the next sends them again
        while self.redis.llen(NOWHERE) < self.lost:
            self.assertLess(time.monotonic(), deadline, "the sweep did not send the lost jobs again")
            trips.append(self.round_trip())
            time.sleep(0.02)
        self.assertLess(
            max(trips),
            self.longest,
            f"a job waited {max(trips):.2f} s while the sweep sent {self.lost} jobs again "
            f"({len(trips)} round trips, median {sorted(trips)[len(trips) // 2] * 1000:.0f} ms)",
        )
