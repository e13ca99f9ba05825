"""The jobs of a transaction go to Redis in one round trip, as the very
messages Celery's ``apply_async`` would have sent; whoever listens to
Celery's publish signals still gets them through ``apply_async``."""

import base64
from celery import signals
import json
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks import jobqueue
from ploneintranet.asynctasks import ledger
from ploneintranet.asynctasks import publish
from ploneintranet.asynctasks.testing import REDIS_SERVER_FIXTURE
import redis
import transaction
import unittest


ARGS = (
    "http://localhost:8080/Plone/doc/@@count",
    {"_authenticator": "token", "key": "value"},
    {"X-celery-task-name": celerytasks.post.name},
    {"__ac": "cookie"},
)


def _readable(raw):
    message = json.loads(raw)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    return message


class TestPublish(unittest.TestCase):
    layer = REDIS_SERVER_FIXTURE

    def setUp(self):
        self.app = celerytasks.app
        self.redis = redis.Redis.from_url(self.layer["redis_url"], socket_timeout=5)
        self.redis.flushdb()

    def tearDown(self):
        self.redis.flushdb()
        self.redis.close()

    def messages(self, queue):
        """The messages in ``queue``, the first to be taken first."""
        return [_readable(raw) for raw in reversed(self.redis.lrange(queue, 0, -1))]

    def test_same_message_as_apply_async(self):
        cases = [
            ("high", {}),
            ("high", {"countdown": 5, "expires": 600}),
            ("high", {"ignore_result": True}),
            ("parked", {"queue": "parked"}),
        ]
        for queue, options in cases:
            with self.subTest(options=options):
                with ledger.recorded():
                    celerytasks.post.apply_async(ARGS, task_id="by-celery", **options)
                job = dict(options, task_id="by-us")
                self.assertTrue(publish.can_send(self.app, [(celerytasks.post, ARGS, job)]))
                publish.send(self.app, [(celerytasks.post, ARGS, job)])
                theirs, ours = self.messages(queue)
                self.redis.delete(queue)
                # what differs by nature: ids, the moment, the delivery tag
                for message in theirs, ours:
                    for part, name in [
                        ("headers", "id"), ("headers", "root_id"), ("headers", "eta"),
                        ("headers", "expires"), ("properties", "correlation_id"),
                        ("properties", "delivery_tag"), ("properties", "expiration"),
                    ]:
                        message[part].pop(name, None)
                    # Celery copies the options argsrepr and kwargsrepr into
                    # the properties too; the worker reads the headers
                    message["properties"].pop("argsrepr", None)
                    message["properties"].pop("kwargsrepr", None)
                self.assertEqual(ours, theirs)
                self.assertEqual(ours["headers"]["argsrepr"], f"({ARGS[0]!r}, ...)")
                entry = json.loads(self.redis.hget(ledger.JOBS, "by-us"))
                self.assertEqual(entry["args"], list(ARGS))
                self.assertEqual("eta" in entry["options"], "countdown" in options)

    def test_one_round_trip_in_order_with_ledger_and_debounce(self):
        jobs = [
            (celerytasks.post, ARGS, {"task_id": f"job-{index}", "argsrepr": "(url, ...)"})
            for index in range(10)
        ]
        publish.send(self.app, jobs, debounce_keys=[("debounce-key", "job-9", 60)])
        taken = [message["headers"]["id"] for message in self.messages("high")]
        self.assertEqual(taken, [f"job-{index}" for index in range(10)])
        self.assertEqual(self.redis.hlen(ledger.JOBS), 10)
        self.assertEqual(self.redis.zcard(ledger.DUE), 10)
        self.assertEqual(self.redis.get("debounce-key"), b"job-9")
        self.assertGreater(self.redis.ttl("debounce-key"), 50)

    def test_publish_signal_listeners_keep_apply_async(self):
        heard = []

        def listener(sender=None, headers=None, **kwargs):
            heard.append(headers["id"])

        job = (celerytasks.post, ARGS, {"task_id": "watched"})
        signals.before_task_publish.connect(listener)
        try:
            self.assertFalse(publish.can_send(self.app, [job]))
            jobqueue.jobs_of_transaction().add(*job, userid="someone")
            transaction.commit()
        finally:
            signals.before_task_publish.disconnect(listener)
        self.assertEqual(heard, ["watched"])
        self.assertEqual([m["headers"]["id"] for m in self.messages("high")], ["watched"])
        self.assertTrue(self.redis.hexists(ledger.JOBS, "watched"))
        self.assertTrue(publish.can_send(self.app, [job]))

    def test_options_it_does_not_know_keep_apply_async(self):
        for options in ({"priority": 5}, {"link": "x"}, {"headers": {"a": "b"}}, {"routing_key": "x"}):
            with self.subTest(options=options):
                job = (celerytasks.post, ARGS, dict(options, task_id="other"))
                self.assertFalse(publish.can_send(self.app, [job]))

    def test_jobs_of_other_tasks_stay_out_of_the_ledger(self):
        # celerytasks.add is no JobTask: nothing would cross its job out, and
        # the sweep would send it again once it ran
        publish.send(self.app, [(celerytasks.add, (2, 3), {"task_id": "plain"})])
        self.assertEqual([m["headers"]["id"] for m in self.messages("celery")], ["plain"])
        self.assertFalse(self.redis.hexists(ledger.JOBS, "plain"))
        self.assertFalse(self.redis.hexists(ledger.SENT, "plain"))
