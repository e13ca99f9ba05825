"""The broker-dependent tests of test_hostile, test_argsrepr and
test_tasks again, on Redis with Sentinel (the layer of test_sentinel: a
master, a replica and three sentinels of the tests' own, a real worker,
Plone over HTTP).

What depends on the broker there: jobs sent straight to the broker by an
attacker, a second worker with ``ASYNC_ALLOWED_ORIGINS``, the longest delay
Plone accepts, what a reader of the broker finds in a queued job, and the
repr of a job's arguments in the messages of every road (after the commit,
at once, sent again by the ledger's sweep, retried by Celery); and a job
Plone refuses is not retried. Their Redis is the master the sentinels name
(:func:`~.reuse.broker_redis`).
"""

import base64
from celery.result import AsyncResult
import json
from plone.app.testing import TEST_USER_NAME
from plone.app.testing import TEST_USER_PASSWORD
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks import ledger
from ploneintranet.asynctasks.tests import test_argsrepr
from ploneintranet.asynctasks.tests import test_hostile
from ploneintranet.asynctasks.tests import test_tasks
from ploneintranet.asynctasks.tests.base import PipelineTestCase
from ploneintranet.asynctasks.tests.reuse import broker_redis
from ploneintranet.asynctasks.tests.reuse import redis_layers_left_out
from ploneintranet.asynctasks.tests.reuse import start_layer_worker
from ploneintranet.asynctasks.tests.test_sentinel import SENTINEL_PIPELINE_TESTING
import time
from unittest import mock


# the reused tests' own layers are not set up for this module (tests/reuse.py)
globals().update(redis_layers_left_out())


# --- test_hostile -----------------------------------------------------------


class OnSentinel:
    """The hostile tests' harness with the broker reached through the sentinels."""

    layer = SENTINEL_PIPELINE_TESTING

    def start_allowlist_worker(self):
        """The second worker, on this layer's broker (with its master name)."""

        def start(url, directory, name, **options):
            return start_layer_worker(self.layer, directory, name, **options)

        with mock.patch.object(test_hostile, "start_celery_worker", start):
            return super().start_allowlist_worker()

    def queued_job(self):
        """As test_hostile's, the queue and the ledger read on the master."""
        queue = f"nobody-{time.monotonic_ns()}"
        result = self.enqueue(queue=queue)
        self.assertIsInstance(result, AsyncResult, result)
        client = broker_redis(self.layer)
        raws = client.lrange(queue, 0, -1)
        entry = client.hget(ledger.JOBS, result.id) or b""
        client.delete(queue)
        ledger.forget(celerytasks.app, result.id)
        self.assertEqual(len(raws), 1)
        args, _, _ = json.loads(base64.b64decode(json.loads(raws[0])["body"]))
        return raws[0].decode() + entry.decode(), args


class TestHostileInput(OnSentinel, test_hostile.TestHostileInput):
    pass


class TestTheHarnessNotices(OnSentinel, test_hostile.TestTheHarnessNotices):
    pass


class TestJobCredentials(OnSentinel, test_hostile.TestJobCredentials):
    pass


# --- test_argsrepr ----------------------------------------------------------


class ArgsreprOnSentinel:
    layer = SENTINEL_PIPELINE_TESTING

    def setUp(self):
        # test_argsrepr's setUp, with the master's client for the queues
        PipelineTestCase.setUp(self)
        self.redis = broker_redis(self.layer)
        self.addCleanup(self.clean_parked)
        self.user = (TEST_USER_NAME, TEST_USER_PASSWORD)


class TestArgsreprAfterCommit(ArgsreprOnSentinel, test_argsrepr.TestAfterCommit):
    pass


class TestArgsreprOtherRoads(ArgsreprOnSentinel, test_argsrepr.TestOtherRoads):
    pass


# --- test_tasks: a job refused by Plone is not retried; the routing header ---


class TestTasksReindexObject(test_tasks.TestReindexObject):
    layer = SENTINEL_PIPELINE_TESTING


class TestTasksPost(test_tasks.TestPost):
    layer = SENTINEL_PIPELINE_TESTING
