"""Send the jobs of a transaction to Redis in one round trip.

Celery's ``apply_async`` sends one message at a time, and for each it routes,
declares the queue, subscribes to the job's result and asks kombu for a
connection: on a machine where a Plone request costs a few milliseconds,
that is most of what a job costs the user's request.

When the broker is Redis and nothing listens to Celery's publish signals,
:func:`send` builds each message with Celery's own protocol code
(``app.amqp.create_task_message``, so the worker receives exactly what
``apply_async`` would have sent), and writes the ledger entries, the debounce
keys and the messages in one Redis pipeline, in that order. Anything else (a
priority, callbacks, a custom exchange, another broker, a listener to
``before_task_publish``) goes through ``apply_async``, as before.

A job's arguments carry its credentials, so every message :func:`send`
writes shows monitors (Flower, Celery's events, the worker's log) only the
url of its job (:func:`reprs_for_monitors`), whatever ``argsrepr`` and
``kwargsrepr`` options it was given.
"""

import base64
from celery import signals
from datetime import datetime
from kombu.utils.json import dumps
from kombu.utils.uuid import uuid
from ploneintranet.asynctasks import ledger
from ploneintranet.asynctasks.broker import is_redis
from ploneintranet.asynctasks.broker import redis_client


#: The ``apply_async`` options :func:`send` knows how to honour.
OPTIONS = frozenset(
    ("task_id", "argsrepr", "kwargsrepr", "countdown", "eta", "expires", "queue", "ignore_result")
)

#: The task attributes that change a message; a task that sets one is sent
#: by ``apply_async``.
_TASK_OPTIONS = ("priority", "time_limit", "soft_time_limit", "exchange", "routing_key")


def reprs_for_monitors(args, kwargs=None):
    """The ``argsrepr`` and ``kwargsrepr`` options of a job's message: the
    url only.

    Celery copies them into the message headers (and its properties), where
    Flower, events and logs show them; a repr of the arguments themselves
    would show the job's credentials and token."""
    shown = f"({args[0]!r}, ...)" if args else "()"
    return {"argsrepr": shown, "kwargsrepr": "{...}" if kwargs else "{}"}


def can_send(app, jobs):
    """True if :func:`send` sends ``jobs`` ((task, args, options) tuples) as
    ``apply_async`` would."""
    if app.conf.task_always_eager or not is_redis(app.conf.broker_url):
        return False
    if app.conf.task_send_sent_event:
        return False
    if signals.before_task_publish.receivers or signals.after_task_publish.receivers:
        return False  # someone watches every message; let Celery send them
    for task, _, options in jobs:
        if not OPTIONS.issuperset(options) or task.serializer != "json":
            return False
        if any(getattr(task, name, None) is not None for name in _TASK_OPTIONS):
            return False
    return True


def _message(app, task, args, options, routes):
    """The Redis list and the raw message of one job, as kombu writes them."""
    task_id = options["task_id"]
    queue = ledger.queue_of(app, task, args, options, routes)
    headers, properties, body, _ = app.amqp.create_task_message(
        task_id, task.name, args, {},
        countdown=options.get("countdown"),
        eta=options.get("eta"),
        expires=options.get("expires"),
        reply_to=app.thread_oid,
        ignore_result=options.get("ignore_result", task.ignore_result),
        **reprs_for_monitors(args),
    )
    if headers.get("expires"):
        seconds = (datetime.fromisoformat(headers["expires"]) - app.now()).total_seconds()
        properties["expiration"] = str(max(0, round(seconds * 1000)))
    properties.update(
        delivery_mode=queue.exchange.delivery_mode or 2,
        priority=0,
        body_encoding="base64",
        delivery_tag=uuid(),
        # a direct exchange is sent as to the anonymous one, named by the queue
        delivery_info={"exchange": "", "routing_key": queue.name},
    )
    message = {
        "body": base64.b64encode(dumps(body).encode("utf-8")).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": properties,
    }
    return queue.name, dumps(message)


def send(app, jobs, debounce_keys=()):
    """Write the ledger entries of ``jobs``, the ``debounce_keys``
    ((key, task id, seconds) tuples) and the messages in one round trip.

    Raises what Redis raises; the caller falls back to ``apply_async``.
    """
    routes = {}
    messages = [_message(app, task, args, options, routes) for task, args, options in jobs]
    pipe = redis_client(app).pipeline(transaction=False)
    ledger.add_to(pipe, app, jobs, routes)
    for key, task_id, seconds in debounce_keys:
        pipe.set(key, task_id, ex=seconds)
    by_queue = {}
    for key, raw in messages:
        by_queue.setdefault(key, []).append(raw)
    for key, raws in by_queue.items():
        # one LPUSH of many values keeps their order: the first is taken first
        pipe.lpush(key, *raws)
    pipe.execute()
