"""The one place that writes kombu's bytes (:mod:`~ploneintranet.asynctasks.rediswriter`)
writes, for every option it accepts, the very message Celery's
``apply_async`` writes; a job it cannot write exactly goes by Celery's road."""

import base64
from celery import signals
from datetime import datetime
from datetime import timedelta
from datetime import timezone
import json
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks import ledger
from ploneintranet.asynctasks import rediswriter
from ploneintranet.asynctasks.delivery import delivery_for
from ploneintranet.asynctasks.tests.base import BrokerTestCase
from ploneintranet.asynctasks.wire import Job
import redis
from unittest import mock


ARGS = (
    "http://localhost:8080/Plone/doc/@@count",
    {"_authenticator": "token", "key": "value"},
    {"X-celery-task-name": celerytasks.post.name},
    {"__ac": "cookie"},
)
#: What differs between two messages by nature: ids, the moment, the tag.
NATURE = [
    ("headers", "id"),
    ("headers", "root_id"),
    ("headers", "eta"),
    ("headers", "expires"),
    ("properties", "correlation_id"),
    ("properties", "delivery_tag"),
    ("properties", "expiration"),
]


def readable(raw):
    message = json.loads(raw)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    return message


class TestRedisWriter(BrokerTestCase):
    def messages(self, queue):
        """The messages in ``queue``, the first to be taken first."""
        return [readable(raw) for raw in reversed(self.redis.lrange(queue, 0, -1))]

    def test_every_option_it_accepts_gives_celerys_own_message(self):
        soon = datetime.now(timezone.utc) + timedelta(seconds=30)
        cases = {
            "task_id": ("high", {}),
            "argsrepr, kwargsrepr": ("high", {"argsrepr": "(url, ...)", "kwargsrepr": "{}"}),
            "countdown": ("high", {"countdown": 5}),
            "eta": ("high", {"eta": soon}),
            "expires, seconds": ("high", {"expires": 600}),
            "expires, a time": ("high", {"expires": soon + timedelta(hours=1)}),
            "queue": ("parked", {"queue": "parked"}),
            "ignore_result": ("high", {"ignore_result": True}),
        }
        self.assertEqual(
            set(", ".join(cases).replace(",", " ").split()) - {"seconds", "a", "time"}, set(rediswriter.OPTIONS)
        )
        for name, (queue, options) in cases.items():
            with self.subTest(name):
                theirs = Job.create(celerytasks.post, ARGS, dict(options, task_id="by-celery"))
                delivery_for(self.app).by_celery([theirs])  # Celery's road: apply_async
                ours = Job.create(celerytasks.post, ARGS, dict(options, task_id="by-us"))
                self.assertTrue(rediswriter.can_write(self.app, [ours]))
                delivery_for(self.app).publish([ours])
                by_celery, by_us = self.messages(queue)
                self.assertEqual((by_celery["headers"]["id"], by_us["headers"]["id"]), ("by-celery", "by-us"))
                for message in by_celery, by_us:
                    for part, field in NATURE:
                        message[part].pop(field, None)
                    # Celery copies argsrepr and kwargsrepr into the properties
                    # too; the worker reads the headers
                    message["properties"].pop("argsrepr", None)
                    message["properties"].pop("kwargsrepr", None)
                self.assertEqual(by_us, by_celery)
                self.assertEqual(by_us["headers"]["argsrepr"], f"({ARGS[0]!r}, ...)")
                entry = json.loads(self.redis.hget(ledger.JOBS, "by-us"))
                self.assertEqual(entry["args"], list(ARGS))
                self.assertEqual("eta" in entry["options"], "countdown" in options or "eta" in options)
                self.redis.flushdb()

    def test_one_round_trip_in_order(self):
        jobs = [Job.create(celerytasks.post, ARGS, {"task_id": f"job-{index}"}) for index in range(10)]
        with mock.patch.object(
            redis.client.Pipeline, "execute", autospec=True, side_effect=redis.client.Pipeline.execute
        ) as executed:
            delivery_for(self.app).publish(jobs)
        self.assertEqual(executed.call_count, 1)
        self.assertEqual(self.ids_in("high"), [f"job-{i}" for i in range(10)])

    def test_what_it_cannot_write_exactly_goes_by_celerys_road(self):
        def listener(**kwargs):
            pass

        plain = Job.create(celerytasks.post, ARGS, {"task_id": "plain"})
        self.assertTrue(rediswriter.can_write(self.app, [plain]))
        for options in ({"priority": 5}, {"link": "x"}, {"headers": {"a": "b"}}, {"routing_key": "x"}):
            with self.subTest(options=options):
                job = Job.create(celerytasks.post, ARGS, dict(options, task_id="other"))
                self.assertFalse(rediswriter.can_write(self.app, [plain, job]))
        signals.before_task_publish.connect(listener)
        try:
            self.assertFalse(rediswriter.can_write(self.app, [plain]))
        finally:
            signals.before_task_publish.disconnect(listener)
        with mock.patch.dict(self.app.conf, {"broker_transport_options": {"global_keyprefix": "site1:"}}):
            self.assertFalse(rediswriter.can_write(self.app, [plain]))
