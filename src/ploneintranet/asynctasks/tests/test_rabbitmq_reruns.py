"""The broker-dependent tests of test_hostile, test_argsrepr and
test_tasks again, on RabbitMQ (the layer of test_rabbitmq: a private vhost,
the results in a private Redis, a real worker, Plone over HTTP).

What depends on the broker there: jobs sent straight to the broker by an
attacker, a second worker with ``ASYNC_ALLOWED_ORIGINS``, the longest delay
Plone accepts (RabbitMQ's delayed delivery counts 2**28 s, not Redis'
visibility timeout), what a reader of the broker finds in a queued job, and
the repr of a job's arguments in the messages of each road; and a job
Plone refuses is not retried. A queue's messages are read with
``basic_get`` and left unacknowledged (:func:`~.reuse.rabbitmq_messages`);
their body is plain JSON here, where Redis keeps it in base64, so a
credential in it would be found.

Not run here, as they are about Redis: test_argsrepr's job sent again by the
ledger (RabbitMQ keeps unacknowledged jobs itself, there is no ledger) and
its retried job read from kombu's ``unacked`` hash in Redis (RabbitMQ
shows no message a worker holds).
"""

from celery.result import AsyncResult
import json
from ploneintranet.asynctasks.broker import NATIVE_DELAY_LIMIT
from ploneintranet.asynctasks.tests import test_argsrepr
from ploneintranet.asynctasks.tests import test_hostile
from ploneintranet.asynctasks.tests import test_tasks
from ploneintranet.asynctasks.tests.reuse import rabbitmq_delete
from ploneintranet.asynctasks.tests.reuse import rabbitmq_messages
from ploneintranet.asynctasks.tests.reuse import redis_layers_left_out
from ploneintranet.asynctasks.tests.reuse import start_layer_worker
from ploneintranet.asynctasks.tests.test_rabbitmq import RABBITMQ_PIPELINE_TESTING
import time
from unittest import mock


# the reused tests' own layers are not set up for this module (tests/reuse.py)
globals().update(redis_layers_left_out())


# --- test_hostile -----------------------------------------------------------


class OnRabbitMQ:
    """The hostile tests' harness with RabbitMQ as the broker."""

    layer = RABBITMQ_PIPELINE_TESTING

    def start_allowlist_worker(self):
        """The second worker, on this layer's vhost (results in its Redis)."""

        def start(url, directory, name, **options):
            return start_layer_worker(self.layer, directory, name, **options)

        with mock.patch.object(test_hostile, "start_celery_worker", start):
            return super().start_allowlist_worker()

    def cases(self):
        """test_hostile's table; the delay refused is RabbitMQ's longest."""
        rows = []
        for what, attack, args, kwargs, expected in super().cases():
            if kwargs.get("countdown") == 10**6:
                self.assertIn("Redis", what)  # the row this replaces
                what, kwargs = "a delay RabbitMQ cannot count", dict(kwargs, countdown=NATIVE_DELAY_LIMIT + 1)
            rows.append((what, attack, args, kwargs, expected))
        self.assertIn("a delay RabbitMQ cannot count", [row[0] for row in rows])
        return rows

    def queued_job(self):
        """As test_hostile's: the message as RabbitMQ holds it (no ledger)."""
        queue = f"nobody-{time.monotonic_ns()}"
        result = self.enqueue(queue=queue)
        self.assertIsInstance(result, AsyncResult, result)
        broker_url = self.layer["broker_url"]
        self.addCleanup(rabbitmq_delete, broker_url, queue)
        messages = rabbitmq_messages(broker_url, queue)
        self.assertEqual(len(messages), 1)
        (message,) = messages
        self.assertEqual(message["headers"]["id"], result.id)
        args, _, _ = message["body"]
        return json.dumps(message, default=str), args


class TestHostileInput(OnRabbitMQ, test_hostile.TestHostileInput):
    pass


class TestTheHarnessNotices(OnRabbitMQ, test_hostile.TestTheHarnessNotices):
    pass


class TestJobCredentials(OnRabbitMQ, test_hostile.TestJobCredentials):
    pass


# --- test_argsrepr ----------------------------------------------------------


class ArgsreprOnRabbitMQ:
    layer = RABBITMQ_PIPELINE_TESTING

    def clean_parked(self):
        rabbitmq_delete(self.layer["broker_url"], test_argsrepr.PARKED, purge=True)

    def parked(self):
        """The messages waiting in the parked queue, the first sent first."""
        return rabbitmq_messages(self.layer["broker_url"], test_argsrepr.PARKED)


class TestArgsreprAfterCommit(ArgsreprOnRabbitMQ, test_argsrepr.TestAfterCommit):
    pass


class TestArgsreprImmediate(ArgsreprOnRabbitMQ, test_argsrepr.ArgsreprTestCase):
    test_immediate = test_argsrepr.TestOtherRoads.test_immediate


# --- test_tasks: a job refused by Plone is not retried; the routing header ---


class TestTasksReindexObject(test_tasks.TestReindexObject):
    layer = RABBITMQ_PIPELINE_TESTING


class TestTasksPost(test_tasks.TestPost):
    layer = RABBITMQ_PIPELINE_TESTING
