"""The one road to the broker (:mod:`ploneintranet.asynctasks.delivery`),
against a real Redis: the jobs of a transaction are sent in order, after
their ledger entries and debounce keys, by Celery's own ``apply_async``."""

from celery import signals
import json
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks import delivery
from ploneintranet.asynctasks import jobqueue
from ploneintranet.asynctasks import ledger
from ploneintranet.asynctasks.tests.base import BrokerTestCase
from ploneintranet.asynctasks.wire import Job
import redis
import transaction
from unittest import mock


ARGS = (
    "http://localhost:8080/Plone/doc/@@count",
    {"_authenticator": "token", "key": "value"},
    {"X-celery-task-name": celerytasks.post.name},
    {"__ac": "cookie"},
)


@celerytasks.app.task(name="ploneintranet.asynctasks.tests.plain_post")
def plain_post(url, data=None, headers=None, cookies=None):
    """A job task not built on JobTask: nothing crosses its jobs out."""


class TestDelivery(BrokerTestCase):
    def test_chosen_once_per_broker(self):
        self.assertIsInstance(delivery.delivery_for(self.app), delivery.RedisDelivery)
        self.assertIs(delivery.delivery_for(self.app), delivery.delivery_for(self.app))
        with mock.patch.dict(self.app.conf, {"task_always_eager": True}):
            self.assertIsInstance(delivery.delivery_for(self.app), delivery.EagerDelivery)
        with mock.patch.dict(self.app.conf, {"broker_url": "amqp://guest@127.0.0.1:5672//"}):
            self.assertIs(type(delivery.delivery_for(self.app)), delivery.Delivery)

    def test_in_order_after_ledger_and_debounce(self):
        jobs = [Job.create(celerytasks.post, ARGS, {"task_id": f"job-{index}"}) for index in range(9)]
        jobs.append(Job.create(celerytasks.post, ARGS, {"task_id": "job-9"}, "editor", debounce=60))
        delivery.delivery_for(self.app).publish(jobs)
        self.assertEqual(self.ids_in("high"), [f"job-{index}" for index in range(10)])
        self.assertEqual(self.redis.hlen(ledger.JOBS), 10)
        self.assertEqual(self.redis.zcard(ledger.DUE), 10)
        key = delivery.DEBOUNCE_PREFIX + jobs[-1].fingerprint
        self.assertEqual(self.redis.get(key), b"job-9")
        self.assertGreater(self.redis.ttl(key), 50)
        message = json.loads(self.redis.lindex("high", 0))
        self.assertEqual(message["headers"]["argsrepr"], f"({ARGS[0]!r}, ...)")
        self.assertIsNotNone(message["headers"]["eta"])  # the debounce is its countdown

    def test_publish_signal_listeners_hear_every_job(self):
        heard = []

        def listener(sender=None, headers=None, **kwargs):
            heard.append(headers["id"])

        signals.before_task_publish.connect(listener)
        try:
            jobqueue.jobs_of_transaction().add(Job.create(celerytasks.post, ARGS, {"task_id": "watched"}))
            transaction.commit()
        finally:
            signals.before_task_publish.disconnect(listener)
        self.assertEqual(heard, ["watched"])
        self.assertEqual(self.ids_in("high"), ["watched"])
        self.assertTrue(self.redis.hexists(ledger.JOBS, "watched"))

    def test_jobs_of_other_tasks_stay_out_of_the_ledger(self):
        # nothing would cross its job out, and the sweep would send it again
        # once it ran
        job = Job.create(plain_post, ARGS, {"task_id": "plain"})
        delivery.delivery_for(self.app).publish([job])
        self.assertEqual(self.ids_in("celery"), ["plain"])
        self.assertFalse(self.redis.hexists(ledger.JOBS, "plain"))
        self.assertFalse(self.redis.hexists(ledger.SENT, "plain"))

    def test_delay_of_a_job_task_takes_the_one_road(self):
        result = celerytasks.post.delay(*ARGS)
        self.assertEqual(self.ids_in("high"), [result.id])
        self.assertTrue(self.redis.hexists(ledger.JOBS, result.id))

    def test_jobs_of_a_failed_round_trip_are_sent_one_by_one_by_celery(self):
        # a round trip that failed while the broker answers (here: the writer
        # refused the jobs)
        jobs = [Job.create(celerytasks.post, ARGS, {"task_id": name}) for name in ("a", "b")]
        sent = delivery.RedisDelivery.by_celery
        calls = []

        def recorded(self, jobs):
            calls.append([job.id for job in jobs])
            return sent(self, jobs)

        with (
            mock.patch.object(delivery.RedisDelivery, "publish", side_effect=TypeError("not writable")),
            mock.patch.object(delivery.RedisDelivery, "by_celery", recorded),
        ):
            unsent = delivery.delivery_for(self.app).send(jobs)
        self.assertEqual(unsent, [])
        self.assertEqual(calls, [["a"], ["b"]])
        self.assertEqual(self.ids_in("high"), ["a", "b"])
        self.assertEqual(self.redis.hlen(ledger.JOBS), 2)

    def test_a_job_that_cannot_be_sent_is_returned_and_logged(self):
        job = Job.create(celerytasks.post, ARGS, {"task_id": "doomed"}, "editor")
        with (
            mock.patch.object(delivery.RedisDelivery, "publish", side_effect=TypeError("not writable")),
            mock.patch.object(delivery.Delivery, "by_celery", side_effect=ConnectionError("down")),
        ):
            with self.assertLogs("ploneintranet.asynctasks") as logs:
                unsent = delivery.delivery_for(self.app).send([job])
        self.assertEqual(unsent, [job])
        (failed,) = [line for line in logs.output if "could not send ploneintranet.asynctasks.celerytasks.post" in line]
        self.assertIn("[doomed]", failed)
        self.assertIn(ARGS[0], failed)
        self.assertNotIn("cookie", "".join(logs.output))

    def test_jobs_for_a_broker_gone_after_the_check_are_returned_at_once(self):
        # no one-by-one attempts, each of which would wait for Celery's
        # retries in the user's request
        jobs = [Job.create(celerytasks.post, ARGS, {"task_id": name}) for name in ("a", "b")]
        down = redis.ConnectionError("Error 111 connecting")
        with (
            mock.patch.object(delivery.RedisDelivery, "publish", side_effect=down),
            mock.patch.object(delivery.Delivery, "by_celery") as by_celery,
        ):
            with self.assertLogs("ploneintranet.asynctasks", "WARNING") as logs:
                unsent = delivery.delivery_for(self.app).send(jobs)
        self.assertEqual(unsent, jobs)
        by_celery.assert_not_called()
        self.assertIn("stopped answering after the check", logs.output[0])
