"""The broker is a setting: Redis, Redis with Sentinel or RabbitMQ, each
with what it needs, and a combination that cannot work is refused when the
settings are read, with a message that says what to set."""

import json
import os
from ploneintranet.asynctasks import broker
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks.errors import AsyncTaskError
import subprocess
import sys
import unittest
from unittest import mock


SHOW = (
    "import json, ploneintranet.asynctasks.celeryconfig as c; print(json.dumps({"
    "'broker': c.broker_url, 'backend': c.result_backend, 'options': c.broker_transport_options, "
    "'backend_options': c.result_backend_transport_options, 'push': c.ASYNC_PUSH_REDIS_URL, "
    "'push_options': c.ASYNC_PUSH_REDIS_OPTIONS, "
    "'queues': [[q.name, q.exchange.type, q.queue_arguments] for q in c.task_queues]}))"
)
#: The settings of a fresh interpreter: none of this process's broker settings.
CLEAN = {name: value for name, value in os.environ.items() if not name.startswith(("BROKER_", "CELERY_", "ASYNC_"))}


def settings_of(**environ):
    """Read the settings in a fresh interpreter with ``environ``; return
    ``(exit status, the settings or the output)``."""
    result = subprocess.run(
        [sys.executable, "-c", SHOW],
        env=dict(CLEAN, **environ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode:
        return result.returncode, result.stdout + result.stderr
    return 0, json.loads(result.stdout)


SENTINELS = "sentinel://:s3cret@10.0.0.1:26379/2;sentinel://10.0.0.2:26380;sentinel://10.0.0.3"
AMQP = "amqp://app:pw@rabbit.example:5672/intranet"


class TestBrokerSettings(unittest.TestCase):
    def assertRefused(self, says, **environ):
        status, output = settings_of(**environ)
        self.assertNotEqual(status, 0, output)
        self.assertIn("ValueError", output)
        for words in says:
            self.assertIn(words, output)
        self.assertNotIn("s3cret", output)
        return output

    def test_plain_redis_is_the_default(self):
        status, settings = settings_of()
        self.assertEqual(status, 0, settings)
        self.assertEqual(settings["broker"], "redis://localhost:6379/0")
        self.assertEqual(settings["backend"], settings["broker"])
        self.assertEqual(settings["options"], {"visibility_timeout": 3600, "unacked_restore_throttle": 1})
        self.assertEqual(settings["queues"], [["celery", "direct", None], ["high", "direct", None]])

    def test_sentinel_with_its_master_name(self):
        status, settings = settings_of(
            BROKER_URL=SENTINELS,
            BROKER_TRANSPORT_OPTIONS='{"master_name": "mymaster", "visibility_timeout": 7200}',
        )
        self.assertEqual(status, 0, settings)
        self.assertEqual(settings["options"]["master_name"], "mymaster")
        self.assertEqual(settings["options"]["visibility_timeout"], 7200)  # merged over ours
        # results and push in the broker, reached through the same sentinels
        self.assertEqual(settings["backend"], SENTINELS)
        self.assertEqual(settings["backend_options"], {"master_name": "mymaster"})
        self.assertEqual(settings["push"], SENTINELS)
        self.assertEqual(settings["push_options"]["master_name"], "mymaster")

    def test_sentinel_without_master_name_is_refused(self):
        self.assertRefused(["Sentinel url", "BROKER_TRANSPORT_OPTIONS", "master_name"], BROKER_URL=SENTINELS)
        self.assertRefused(
            ["RESULT_BACKEND_TRANSPORT_OPTIONS", "master_name"],
            CELERY_RESULT_BACKEND=SENTINELS,
        )

    def test_rabbitmq_gets_quorum_queues_topic_exchanges_and_confirms(self):
        status, settings = settings_of(BROKER_URL=AMQP, CELERY_RESULT_BACKEND="redis://cache:6379/3")
        self.assertEqual(status, 0, settings)
        self.assertEqual(settings["options"], {"confirm_publish": True})
        quorum = {"x-queue-type": "quorum"}
        self.assertEqual(settings["queues"], [["celery", "topic", quorum], ["high", "topic", quorum]])
        # debounce keys and push channels: the Redis of the results
        self.assertEqual(settings["push"], "redis://cache:6379/3")
        status, settings = settings_of(
            BROKER_URL=AMQP, CELERY_RESULT_BACKEND="redis://cache:6379/3", ASYNC_AMQP_QUEUE_TYPE="classic"
        )
        self.assertEqual(settings["queues"][0], ["celery", "topic", {"x-queue-type": "classic"}])

    def test_rabbitmq_without_a_redis_is_refused(self):
        self.assertRefused(["CELERY_RESULT_BACKEND", "redis://"], BROKER_URL=AMQP)
        output = self.assertRefused(
            ["debounced jobs", "previews", "CELERY_RESULT_BACKEND=rpc://"],
            BROKER_URL=AMQP,
            CELERY_RESULT_BACKEND="rpc://",
        )
        self.assertNotIn(":pw@", output)

    def test_a_job_longer_than_rabbitmqs_consumer_timeout_is_refused(self):
        self.assertRefused(
            ["ASYNC_READ_TIMEOUT=2000", "consumer_timeout"],
            BROKER_URL=AMQP,
            CELERY_RESULT_BACKEND="redis://cache:6379/3",
            ASYNC_READ_TIMEOUT="2000",
        )

    def test_transport_options_must_be_a_json_object(self):
        for value in ("[1, 2]", '{"master_name": ', "mymaster"):
            with self.subTest(value=value):
                self.assertRefused(["BROKER_TRANSPORT_OPTIONS is not a JSON object"], BROKER_TRANSPORT_OPTIONS=value)
        self.assertRefused(
            ["RESULT_BACKEND_TRANSPORT_OPTIONS is not a JSON object"],
            RESULT_BACKEND_TRANSPORT_OPTIONS='"s3cret"',
        )

    def test_other_brokers_and_a_key_prefix_are_refused(self):
        self.assertRefused(["sqs://", "amqp://", "sentinel://"], BROKER_URL="sqs://")
        self.assertRefused(
            ["global_keyprefix", "database of its own"], BROKER_TRANSPORT_OPTIONS='{"global_keyprefix": "site1:"}'
        )


class TestRedisClients(unittest.TestCase):
    def test_kombus_sentinel_form_is_read(self):
        sentinels, keywords = broker.sentinel_address(SENTINELS)
        self.assertEqual(sentinels, [("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379)])
        self.assertEqual(keywords, {"password": "s3cret", "db": 2})

    def test_a_sentinel_client_follows_the_named_master(self):
        client = broker.client_for(SENTINELS, {"master_name": "mymaster", "visibility_timeout": 10})
        pool = client.connection_pool
        self.assertEqual(pool.service_name, "mymaster")
        self.assertEqual(
            [
                (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
                for s in pool.sentinel_manager.sentinels
            ],
            [("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379)],
        )
        # one client per url and master, whatever other options the broker has
        self.assertIs(client, broker.client_for(SENTINELS, {"master_name": "mymaster"}))
        with self.assertRaises(AsyncTaskError) as raised:
            broker.client_for(SENTINELS, {})
        self.assertIn("master_name", str(raised.exception))

    def test_debounce_keys_live_in_the_broker_or_else_the_results_redis(self):
        app = celerytasks.app
        conf = {"broker_url": AMQP, "result_backend": "redis://127.0.0.1:1/5"}
        with mock.patch.dict(app.conf, conf):
            store = broker.key_store(app, needed_for="debounce")
            self.assertEqual(store.connection_pool.connection_kwargs["db"], 5)
        with (
            mock.patch.dict(app.conf, dict(conf, result_backend="rpc://")),
            self.assertRaises(AsyncTaskError) as raised,
        ):
            broker.key_store(app, needed_for="debounce")
        self.assertIn("debounce keeps its keys in Redis", str(raised.exception))
        self.assertIn("CELERY_RESULT_BACKEND", str(raised.exception))


class TestLongestDelay(unittest.TestCase):
    """A delay the broker would answer with a second delivery is refused."""

    def longest(self, url, queue_type="quorum"):
        app = celerytasks.app
        settings = celeryconfig.broker_settings(url, "redis://127.0.0.1:1/0", amqp_queue_type=queue_type)
        with mock.patch.dict(app.conf, settings):
            app.__dict__.pop("amqp", None)  # the queues of these settings
            try:
                return broker.longest_delay(app)
            finally:
                app.__dict__.pop("amqp", None)

    def test_redis_hands_out_again_after_the_visibility_timeout(self):
        seconds, why = self.longest("redis://127.0.0.1:1/0")
        self.assertEqual(seconds, 3600)
        self.assertIn("ASYNC_VISIBILITY_TIMEOUT", why)

    def test_rabbitmq_quorum_queues_wait_in_rabbitmq(self):
        seconds, why = self.longest(AMQP)
        self.assertEqual(seconds, 2**28 - 1)
        self.assertIn("delayed delivery", why)

    def test_rabbitmq_classic_queues_are_held_by_the_worker(self):
        seconds, why = self.longest(AMQP, "classic")
        self.assertEqual(seconds, 1800)
        self.assertIn("consumer_timeout", why)
