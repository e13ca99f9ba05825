"""Celery messages written into kombu's Redis lists, together with the
ledger entries and debounce keys of the same jobs, in one pipeline.

Celery's own road (``apply_async`` in a kombu publish batch) costs the user's
request a round trip of its own, and per job a route, a result subscription
and a binding lookup: in ``make bench`` three times what this writer costs
for ten jobs of a transaction, 1.6 times for one (docs/benchmarks.rst). So a
Redis broker's :class:`~ploneintranet.asynctasks.delivery.RedisDelivery`
writes with this module the jobs it can write exactly as ``apply_async``
would (:func:`can_write`), and sends the others by Celery's road.

The message is Celery's own (``app.amqp.create_task_message``); only kombu's
envelope of it and the list it goes to are written here, so this module is
where a kombu upgrade could break the package: ``tests/test_rediswriter.py``
compares its bytes with what ``apply_async`` writes, for every option in
:data:`OPTIONS`.
"""

import base64
from celery import signals
from datetime import datetime
from kombu.utils.json import dumps
from kombu.utils.uuid import uuid
from ploneintranet.asynctasks.wire import reprs_for_monitors


#: The ``apply_async`` options this writer honours.
OPTIONS = frozenset(("task_id", "argsrepr", "kwargsrepr", "countdown", "eta", "expires", "queue", "ignore_result"))
#: Task attributes that change a message; a task that sets one goes by Celery's road.
_TASK_OPTIONS = ("priority", "time_limit", "soft_time_limit", "exchange", "routing_key")


def can_write(app, jobs):
    """True if :func:`write` writes ``jobs`` exactly as ``apply_async``
    would: settings it honours (:func:`settings_allow`), plain options,
    JSON, and nobody listening to every message."""
    return settings_allow(app) and jobs_allow(jobs)


def settings_allow(app):
    """True unless a setting of ``app`` changes every message (sent events,
    a global key prefix)."""
    options = app.conf.broker_transport_options or {}
    return not (app.conf.task_send_sent_event or options.get("global_keyprefix"))


def jobs_allow(jobs):
    """True if the options and tasks of ``jobs`` are plain, and nobody
    listens to Celery's publish signals."""
    if signals.before_task_publish.receivers or signals.after_task_publish.receivers:
        return False
    return all(
        OPTIONS.issuperset(job.options)
        and job.task.serializer == "json"
        and not any(getattr(job.task, name, None) is not None for name in _TASK_OPTIONS)
        for job in jobs
    )


def message(app, job, queue):
    """kombu's JSON of the message of ``job`` for the kombu ``queue``, as
    kombu's Redis transport writes it. Whatever ``argsrepr`` the job was
    given, the message shows monitors its url only."""
    options = job.options
    headers, properties, body, _ = app.amqp.create_task_message(
        job.id,
        job.task.name,
        job.args,
        {},
        countdown=options.get("countdown"),
        eta=options.get("eta"),
        expires=options.get("expires"),
        reply_to=app.thread_oid,
        ignore_result=options.get("ignore_result", job.task.ignore_result),
        **reprs_for_monitors(job.args),
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
    return dumps(
        {
            "body": base64.b64encode(dumps(body).encode("utf-8")).decode("ascii"),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": properties,
        }
    )


def write(pipe, app, jobs, queues):
    """Add to the Redis pipeline ``pipe`` the messages of ``jobs``, each to
    its kombu queue of ``queues``, in order: one ``LPUSH`` per queue keeps the
    order of its jobs, the first taken first."""
    by_queue = {}
    for job, queue in zip(jobs, queues, strict=True):
        by_queue.setdefault(queue.name, []).append(message(app, job, queue))
    for name, raws in by_queue.items():
        pipe.lpush(name, *raws)
