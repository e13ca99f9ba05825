"""The ledger's sweep, against a real Redis: a job is sent again only when it
is neither in a queue nor taken by a worker on two sweeps in a row, and given
up after :data:`~ploneintranet.asynctasks.ledger.MAX_RESENDS` resends.

The end-to-end case, with a real worker and Plone, is
``test_faults.TestLostOnTheWay``.
"""

import json
import logging
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks import ledger
from ploneintranet.asynctasks.delivery import delivery_for
from ploneintranet.asynctasks.tests.base import BrokerTestCase
from ploneintranet.asynctasks.wire import Job
import time
from unittest import mock


ARGS = ["http://localhost:8080/Plone/doc/@@count", {"key": "value"}, {}, {}]
INTERVAL = 0.2


class TestSweep(BrokerTestCase):
    def setUp(self):
        super().setUp()
        patcher = mock.patch.object(celeryconfig, "ASYNC_SWEEP_INTERVAL", INTERVAL)
        patcher.start()
        self.addCleanup(patcher.stop)

    def sweep(self):
        """One sweep, as the next interval's worker would run it."""
        time.sleep(INTERVAL)
        self.redis.delete(ledger.SWEEPING)
        return ledger.sweep(self.app, "test")

    def job(self, task_id, **options):
        return Job.create(celerytasks.post, ARGS, dict(options, task_id=task_id))

    def record(self, task_id, **options):
        """Write the ledger entry of a job, and send nothing."""
        pipe = self.redis.pipeline()
        ledger.add_to(pipe, self.app, [self.job(task_id, **options)])
        pipe.execute()

    def send(self, task_id, **options):
        """Send a job by the one road: ledger entry, then message."""
        delivery_for(self.app).publish([self.job(task_id, **options)])

    def test_a_job_in_its_queue_is_left_alone(self):
        self.send("waiting")
        self.assertEqual([self.sweep() for _ in range(3)], [[], [], []])
        self.assertEqual(self.ids_in("high"), ["waiting"])

    def test_a_job_taken_by_a_worker_is_left_alone(self):
        self.send("taken")
        # what kombu does when a worker takes a message: the message moves
        # from the queue into the unacked hash
        raw = self.redis.rpop("high")
        self.redis.hset("unacked", "tag", json.dumps([json.loads(raw), "", "high"]))
        self.assertEqual([self.sweep() for _ in range(3)], [[], [], []])
        self.assertEqual(self.ids_in("high"), [])

    def test_a_vanished_job_is_sent_again_after_two_sweeps(self):
        self.send("vanished", countdown=1)
        self.redis.rpop("high")  # a worker took it and died before recording it
        self.assertEqual(self.sweep(), [])  # missing once: maybe on its way
        self.assertEqual(self.sweep(), ["vanished"])
        self.assertEqual(self.ids_in("high"), ["vanished"])
        # sent again with its delay kept, as an eta, so debounce still works
        message = json.loads(self.redis.lindex("high", 0))
        self.assertIsNotNone(message["headers"]["eta"])
        self.assertEqual(self.sweep(), [])  # back in its queue

    def test_a_finished_job_is_crossed_out(self):
        self.record("finished")
        ledger.forget(self.app, "finished")
        self.assertFalse(self.redis.hexists(ledger.JOBS, "finished"))
        self.assertEqual(self.redis.zcard(ledger.DUE), 0)
        self.assertEqual([self.sweep() for _ in range(2)], [[], []])

    def test_a_job_that_keeps_vanishing_is_given_up_and_logged(self):
        self.record("cursed")
        resent = []
        with self.assertLogs("ploneintranet.asynctasks", logging.WARNING) as logs:
            for _ in range(2 * (ledger.MAX_RESENDS + 2)):
                resent += self.sweep()
                self.redis.delete("high")  # gone again
        self.assertEqual(resent, ["cursed"] * ledger.MAX_RESENDS)
        self.assertFalse(self.redis.hexists(ledger.JOBS, "cursed"))
        lost = [line for line in logs.output if "LOST JOB" in line]
        self.assertEqual(len(lost), 1, logs.output)
        self.assertIn("cursed", lost[0])
        self.assertIn(ARGS[0], lost[0])

    def test_one_worker_sweeps_at_a_time(self):
        self.record("one")
        self.redis.set(ledger.SWEEPING, "other-worker")
        self.assertEqual(ledger.sweep(self.app, "test"), [])
        self.assertIsNone(self.redis.hget(ledger.MISSING, "one"))

    def test_while_a_queue_is_too_long_to_read_nothing_is_sent_again(self):
        self.record("vanished")
        for index in range(2):  # jobs the ledger does not know
            celerytasks.add.apply_async((1, 2), queue="high", task_id=f"backlog-{index}")
        with mock.patch.object(ledger, "LONGEST_QUEUE_READ", 1):
            self.assertEqual([self.sweep() for _ in range(3)], [[], [], []])
        self.redis.delete("high")  # the backlog drained
        self.assertEqual([self.sweep() for _ in range(2)], [[], ["vanished"]])

    def test_a_job_sent_again_keeps_its_count_of_resends(self):
        # Celery's retries and the sweep's resends take the one road again:
        # the count of resends stays, when it was sent is new
        self.send("again")
        sent = self.redis.hget(ledger.SENT, "again")
        self.redis.hset(ledger.RESENDS, "again", 2)
        time.sleep(0.01)
        celerytasks.post.apply_async(ARGS, task_id="again")
        self.assertEqual(self.redis.hget(ledger.RESENDS, "again"), b"2")
        self.assertNotEqual(self.redis.hget(ledger.SENT, "again"), sent)
        self.assertEqual(self.ids_in("high"), ["again", "again"])
        ledger.forget(self.app, "again")
        self.assertFalse(self.redis.hexists(ledger.RESENDS, "again"))
