"""The jobs a worker holds when its connection to Redis breaks.

A worker acknowledges a job when it is done (``task_acks_late``), so it holds
every job it has taken and not finished: the ones it runs, and the ones
waiting for their countdown (a debounced job waits 2 s). When the connection
to Redis breaks, Celery forgets the waiting ones and leaves it to kombu to
give their messages back to their queues as it closes the channel. With
Celery 5.7.0 and kombu 5.7.0 that close runs after kombu has let go of the
broker's address, and a worker that could not reach Redis at that moment (it
restarted, the network broke) stops with "Unrecoverable error:
AttributeError("'NoneType' object has no attribute 'hostname'")"; a job that
was running would crash it the same way when it is acknowledged.

:class:`RestoreHeldJobs` turns kombu's give-back on close off for the channel
the worker consumes jobs with, and does it itself once the worker is
connected again:

* the messages of the broken channel are pointed at the new one, so a job
  that ran across the outage is acknowledged through a working connection,
  once;
* each message the broken channel held and no job runs goes back to the head
  of its queue if Redis still has it among the taken messages (``unacked``);
  if Redis restarted without it (no snapshot, no append-only file: the
  ledger lost its entry too), the worker's own copy is published again. One
  that Redis no longer holds although the ledger still has it, or that the
  same Redis process no longer holds, was handed out again by Redis
  meanwhile (the outage outlasted ``ASYNC_VISIBILITY_TIMEOUT``) and is left
  alone: the ledger's sweep sends it again should it vanish.

At a warm shutdown kombu gives the held messages back on close, as before.
"""

from celery import bootsteps
from celery.worker import state
from kombu import Producer
import logging
from ploneintranet.asynctasks import ledger


logger = logging.getLogger("ploneintranet.asynctasks")

#: Properties a message published again keeps; kombu sets the others.
KEPT_PROPERTIES = ("correlation_id", "reply_to", "priority", "delivery_mode")


def redis_run_id(channel):
    """The ``run_id`` of the Redis process ``channel`` talks to (a new one
    after every restart), or None where ``INFO`` is not allowed."""
    with channel.conn_or_acquire() as client:
        try:
            return client.info("server").get("run_id")
        except channel.ResponseError:
            return None


def publish_again(channel, message):
    """Publish ``message``, delivered by another channel, on ``channel`` as it
    was sent: the same body, headers (task id, eta, ...) and routing."""
    properties = {name: message.properties[name] for name in KEPT_PROPERTIES if name in message.properties}
    Producer(channel).publish(
        message.body,
        exchange=message.delivery_info["exchange"],
        routing_key=message.delivery_info["routing_key"],
        headers=message.headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        **properties,
    )


class RestoreHeldJobs(bootsteps.StartStopStep):
    """Consumer bootstep: gives back the jobs a broken connection to Redis
    held, once the worker is connected again (see the module)."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, c, **kwargs):
        self.channel = None  # the channel the worker consumes jobs with
        self.run_id = None  # of the Redis process behind it
        self.held = []  # (run_id, message) held when a connection broke

    def start(self, c):
        """Take over a broken channel's messages, then give the held ones back."""
        if c.connection.transport.driver_type != "redis":
            return  # an AMQP broker gives unacknowledged messages back itself
        channel, broken = c.task_consumer.channel, self.channel
        # kombu's give-back on close would need the connection it has let go of
        channel.do_restore = False
        if broken is not None and broken is not channel:
            self.take_over(broken, channel)
        self.channel = channel
        self.run_id = redis_run_id(channel)
        while self.held:  # a connection error leaves the rest for the next start
            self.give_back(channel, *self.held[0])
            self.held.pop(0)

    def take_over(self, broken, channel):
        """Point the running jobs and ``broken``'s unacknowledged messages at
        ``channel``; keep those no job runs for :meth:`give_back`."""
        running = set()
        for request in tuple(state.active_requests):
            request.message.channel = channel  # it may come from an earlier channel
            running.add(request.message.delivery_tag)
        qos = broken.qos
        # kombu keeps a channel's delivered, unacknowledged messages only here
        for tag, message in list(qos._delivered.items()):
            message.channel = channel
            if tag not in running and tag not in qos._dirty:
                self.held.append((self.run_id, message))

    def give_back(self, channel, run_id, message):
        """Put a held ``message`` back in its queue, or publish it again if
        the Redis that held it (``run_id``) restarted without it (and so
        without its ledger entry)."""
        job = f"{message.headers.get('task')}[{message.headers.get('id')}]"
        tag = message.delivery_tag
        with channel.conn_or_acquire() as client:
            taken = client.hexists(channel.unacked_key, tag)
            # a Redis that kept its data still has the job's ledger entry
            tracked = client.hexists(ledger.JOBS, message.headers.get("id") or "")
        if taken:
            channel.qos.restore_by_tag(tag)
            outcome = "back in its queue"
        elif tracked or (run_id is not None and run_id == self.run_id):
            outcome = "Redis handed it out again meanwhile: left to that"
        else:
            publish_again(channel, message)
            outcome = "Redis restarted without it: sent again from the worker's copy"
        logger.warning("%s was held when the connection to Redis broke; %s", job, outcome)

    def shutdown(self, c):
        """Let kombu give the held messages back when it closes the channel."""
        if self.channel is not None:
            self.channel.do_restore = True
