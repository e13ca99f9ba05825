"""Tests of the Redis pipeline, run again on the layer of another broker.

A test module of another broker subclasses the Redis tests that hold for
any broker and gives the subclass its own layer. zope.pytestlayer marks each
test case class it collects, in place, with the fixture of its layer, and
pytest hands a class's marks down to its subclasses: the subclass would set
up the Redis layer too, with its worker, next to its own. The module
therefore replaces, for its own tests only, the fixtures of the Redis layers
by fixtures that do nothing: ``globals().update(redis_layers_left_out())``.

Tests that read the broker itself (a queue's messages, the ledger) reach it
through :func:`broker_redis` (Redis or Sentinel) or
:func:`rabbitmq_messages` and :func:`rabbitmq_delete` (RabbitMQ).
"""

import json
from kombu import Connection
from ploneintranet.asynctasks.broker import client_for
from ploneintranet.asynctasks.testing import ASYNC_PUSH_TESTING
from ploneintranet.asynctasks.testing import start_celery_worker
from ploneintranet.asynctasks.tests.layers import PIPELINE_TESTING
import pytest
from zope.pytestlayer.fixture import get_fixture_name


#: The layers of the Redis tests that other brokers run again.
REDIS_LAYERS = (PIPELINE_TESTING, ASYNC_PUSH_TESTING)


def redis_layers_left_out(layers=REDIS_LAYERS):
    """``{attribute: fixture}``: for each of ``layers``, a fixture named as
    its function fixture that sets nothing up."""
    fixtures = {}
    for layer in layers:
        name = get_fixture_name(layer, "function")

        @pytest.fixture(name=name)
        def left_out():
            """The layer of the reused test's base class: not set up here."""

        fixtures[f"_left_out_{name}"] = left_out
    return fixtures


def broker_redis(layer):
    """This process's client of the Redis broker of ``layer``: of a private
    redis-server, or of the master its sentinels name (shared: do not
    close it)."""
    return client_for(layer["broker_url"], layer.get("redis_options"))


def start_layer_worker(layer, directory, name, **options):
    """Start one more Celery worker on the broker of ``layer``, with the
    settings that broker needs (the results' Redis of RabbitMQ, the master
    name of Sentinel); ``options`` as for
    :func:`~ploneintranet.asynctasks.testing.start_celery_worker`."""
    return start_celery_worker(layer["broker_url"], directory, name, **{**layer.get("celery_environ", {}), **options})


def rabbitmq_messages(broker_url, queue):
    """The messages waiting in ``queue`` on RabbitMQ, the first to be taken
    first (none if it does not exist), each as ``{"headers", "properties",
    "body"}`` with the body's JSON decoded. They are not acknowledged:
    RabbitMQ keeps them when the channel closes."""
    messages = []
    with Connection(broker_url, connect_timeout=5) as connection:
        channel = connection.channel()
        try:
            while (message := channel.basic_get(queue, no_ack=False)) is not None:
                properties = dict(message.properties)
                messages.append(
                    {
                        "headers": dict(properties.get("application_headers") or {}),
                        "properties": properties,
                        "body": json.loads(message.body),
                    }
                )
        except connection.channel_errors:
            pass  # no such queue: nothing waits in it
        finally:
            if channel.is_open:
                channel.close()
    return messages


def rabbitmq_delete(broker_url, queue, purge=False):
    """Delete ``queue`` on RabbitMQ with its messages, if it exists; with
    ``purge``, only its messages. Purge a queue this process sends to again:
    kombu declares a queue once per process, and a job sent to a deleted
    queue's exchange would go nowhere."""
    with Connection(broker_url, connect_timeout=5) as connection:
        channel = connection.channel()
        try:
            if purge:
                channel.queue_purge(queue)
            else:
                channel.queue_delete(queue)
        except connection.channel_errors:
            pass
        finally:
            if channel.is_open:
                channel.close()
