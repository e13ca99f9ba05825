"""The one road of a job to the broker.

:func:`delivery_for` chooses, once per broker, how a
:class:`~ploneintranet.asynctasks.wire.Job` is sent: run at once (eager), by Celery's own
``apply_async`` in one kombu publish batch (:class:`Delivery`, RabbitMQ's
road, its debounce keys in the Redis of the results), or, with a Redis
broker, after their :mod:`~ploneintranet.asynctasks.ledger` entries and
debounce keys are written in one pipeline (:class:`RedisDelivery`).
"""

from celery.utils.quorum_queues import detect_quorum_queues
from datetime import datetime
from datetime import timezone
from kombu.exceptions import OperationalError
from kombu.transport.native_delayed_delivery import bind_queue_to_native_delayed_delivery_exchange
from kombu.transport.native_delayed_delivery import declare_native_delayed_delivery_exchanges_and_queues
import logging
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks import ledger
from ploneintranet.asynctasks import rediswriter
from ploneintranet.asynctasks.broker import is_amqp
from ploneintranet.asynctasks.broker import key_store
from ploneintranet.asynctasks.broker import redis_client
from ploneintranet.asynctasks.wire import masked_url
import redis
import time


logger = logging.getLogger("ploneintranet.asynctasks")
#: What a broker that does not answer raises: redis-py's errors, kombu's
#: (Celery's road and RabbitMQ), the socket's.
BROKER_DOWN = (redis.ConnectionError, redis.TimeoutError, OperationalError, OSError)

#: Followed by a job's fingerprint: the id of the latest of its debounced jobs.
DEBOUNCE_PREFIX = "ploneintranet.asynctasks:debounce:"
#: Written with Redis ``WAIT`` after jobs sent by Celery's road: replicas
#: that have it have every write before it (replication keeps their order).
REPLICATED = "ploneintranet.asynctasks:replicated"


def add_debounce_keys(pipe, jobs):
    """Add to the Redis pipeline ``pipe`` the key of each debounced job of
    ``jobs``: the id of the latest job of its fingerprint."""
    for job in jobs:
        if job.debounce:
            pipe.set(DEBOUNCE_PREFIX + job.fingerprint, job.id, ex=int(job.debounce) + 3600)


class Delivery:
    """Celery's own road: each job by its task's ``apply_async``, all of
    them in one kombu publish batch where the transport batches. The
    debounce keys go first to the Redis of the results
    (:func:`~ploneintranet.asynctasks.broker.key_store`).

    On RabbitMQ with quorum queues a delayed job waits in RabbitMQ (Celery's
    native delayed delivery), not in the worker: :meth:`prepare_delays`
    declares its exchanges and queues before the first job is sent."""

    def __init__(self, app):
        self.app = app
        self.native_delays = is_amqp(app.conf.broker_url) and detect_quorum_queues(app, "amqp")[0]
        self.delays_ready = False

    def check(self):
        """Make a round trip to the broker; raise what it raises.

        Not through Celery's producer pool: a pooled connection may be
        stale, and a broken one must not be handed back to the pool."""
        with self.app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)

    def publish(self, jobs):
        """Send ``jobs``; return their ``AsyncResult``. Raises what the
        broker raises."""
        if any(job.debounce for job in jobs):
            self.write_debounce_keys(jobs)
        return self.by_celery(jobs)

    def write_debounce_keys(self, jobs):
        """Write the debounce keys of ``jobs``. A failure is logged, not
        raised: the jobs are sent, and each of them runs."""
        try:
            pipe = key_store(self.app, needed_for="debounce").pipeline(transaction=False)
            add_debounce_keys(pipe, jobs)
            pipe.execute()
        except Exception as error:
            logger.warning(
                "could not write the debounce keys of %d job(s) (%s: %s): they are "
                "sent, and none of them will be skipped as superseded",
                len(jobs),
                type(error).__name__,
                error,
            )

    def by_celery(self, jobs):
        """Send ``jobs`` by ``apply_async``, in one kombu publish batch."""
        if self.native_delays and not self.delays_ready:
            self.prepare_delays()
        with self.app.producer_or_acquire() as producer, producer.batch():
            return [job.task.apply_async(job.args, producer=producer, **self.options_of(job)) for job in jobs]

    def options_of(self, job):
        """The ``apply_async`` options of ``job``. For RabbitMQ's native
        delayed delivery, which routes by whole seconds and refuses a
        countdown under one, a delay is a countdown of at least one second
        (an ``eta`` less than a second ahead would be refused by the time
        Celery turns it into a countdown)."""
        options = job.options
        if not self.native_delays or not (options.get("countdown") or options.get("eta")):
            return options
        delay, eta = options.get("countdown") or 0, options.get("eta")
        if eta is not None:
            eta = eta if eta.tzinfo else eta.replace(tzinfo=timezone.utc)
            delay = (eta - datetime.now(timezone.utc)).total_seconds()
        options = {name: value for name, value in options.items() if name not in ("eta", "countdown")}
        if delay > 0:
            options["countdown"] = max(1, delay)
        return options

    def prepare_delays(self):
        """Declare the exchanges and queues of Celery's native delayed
        delivery and bind the task queues to them, as a worker does when it
        starts: without them RabbitMQ would drop a delayed job sent before
        the first worker started."""
        with self.app.connection_for_write() as connection:
            declare_native_delayed_delivery_exchanges_and_queues(
                connection, self.app.conf.broker_native_delayed_delivery_queue_type
            )
            for queue in self.app.amqp.queues.values():
                queue(connection.default_channel).declare()
                bind_queue_to_native_delayed_delivery_exchange(connection, queue)
        self.delays_ready = True

    def send(self, jobs):
        """Send the jobs of a committed transaction, together; should that
        fail while the broker answers, one by one by ``apply_async`` (with
        Celery's publish retries; delivery stays at least once). Never raises:
        returns the jobs that could not be sent, all of them when the broker
        does not answer (it went down between the check and the send), for
        the caller to keep (:func:`.jobqueue.keep_unsent`)."""
        try:
            self.publish(jobs)
            return []
        except BROKER_DOWN as error:
            logger.warning(
                "the job queue at %s stopped answering after the check (%s: %s): %d job(s) not sent",
                masked_url(self.app.conf.broker_url),
                type(error).__name__,
                error,
                len(jobs),
            )
            return list(jobs)
        except Exception as error:
            logger.warning(
                "could not send %d job(s) together (%s: %s); sending them one by one",
                len(jobs),
                type(error).__name__,
                error,
            )
        unsent = []
        for job in jobs:
            try:
                self.by_celery([job])
            except Exception:
                # credentials are not logged: the url and the user only
                logger.exception(
                    "could not send %s[%s] for %s as %s to %s after the transaction committed",
                    job.task.name,
                    job.id,
                    job.url,
                    job.userid,
                    masked_url(self.app.conf.broker_url),
                )
                unsent.append(job)
        return unsent


class EagerDelivery(Delivery):
    """``ASYNC_ENABLED=false``: every job runs at once, in this process."""

    def check(self):
        """Nothing to check: there is no broker."""

    def publish(self, jobs):
        """Run ``jobs`` now (none waits, so none is debounced)."""
        return self.by_celery(jobs)

    def by_celery(self, jobs):
        """Run ``jobs`` now; return their ``EagerResult``."""
        return [job.task.apply_async(job.args, **job.options) for job in jobs]


class RedisDelivery(Delivery):
    """A Redis broker: the jobs' ledger entries, debounce keys and messages
    in one pipeline (:mod:`~ploneintranet.asynctasks.rediswriter`), or, for
    jobs that writer cannot write exactly, the entries and keys first and the
    jobs then by Celery's road. With ``ASYNC_REDIS_WAIT_REPLICAS`` the same
    round trip waits (Redis ``WAIT``) until that many replicas have them, so
    that a Sentinel failover right after it loses none."""

    def check(self):
        """Ping the broker's Redis."""
        redis_client(self.app).ping()

    def __init__(self, app):
        super().__init__(app)
        # settings are fixed for a delivery: read them once, not per transaction
        self.writes = rediswriter.settings_allow(app)

    def send(self, jobs):
        """Send the jobs of a committed transaction (see :meth:`Delivery.send`).

        With Sentinel, while no master answers (a failover), the jobs are
        sent again every half second, for up to
        ``ASYNC_SENTINEL_FAILOVER_WAIT`` seconds, to the master Sentinel
        promotes; the request that committed them waits meanwhile."""
        if self.app.conf.broker_url.startswith("sentinel://"):
            deadline = time.monotonic() + celeryconfig.ASYNC_SENTINEL_FAILOVER_WAIT
            while time.monotonic() < deadline:
                try:
                    self.publish(jobs)
                    return []
                except (redis.ConnectionError, redis.TimeoutError, OperationalError) as error:
                    logger.warning(
                        "no Redis master answers (%s: %s): sending %d job(s) again in 0.5 s",
                        type(error).__name__,
                        error,
                        len(jobs),
                    )
                    time.sleep(0.5)
        return super().send(jobs)

    def publish(self, jobs):
        """Send ``jobs`` in one round trip where :func:`.rediswriter.can_write`;
        return their ``AsyncResult``. Raises what Redis raises."""
        if not (self.writes and rediswriter.jobs_allow(jobs)):
            return self.by_celery(jobs)
        routes = {}
        pipe = self.bookkeeping(jobs, routes)
        rediswriter.write(pipe, self.app, jobs, [ledger.queue_of(self.app, job, routes) for job in jobs])
        waits = self.add_wait(pipe)
        replies = pipe.execute()
        if waits:
            self.replicated(replies[-1], jobs)
        return [job.task.AsyncResult(job.id) for job in jobs]

    def by_celery(self, jobs):
        """Write the ledger entries and debounce keys of ``jobs``, then send
        them by ``apply_async``. A failure to write is logged, not raised:
        sending will report a broker that is down."""
        try:
            self.bookkeeping(jobs).execute()
        except Exception as error:
            logger.warning(
                "could not write %d job(s) into the ledger (%s: %s): they are sent, "
                "but would not be sent again if a worker lost them",
                len(jobs),
                type(error).__name__,
                error,
            )
        results = super().by_celery(jobs)
        if celeryconfig.ASYNC_REDIS_WAIT_REPLICAS:
            pipe = redis_client(self.app).pipeline(transaction=False).set(REPLICATED, jobs[-1].id, ex=60)
            self.add_wait(pipe)
            self.replicated(pipe.execute()[-1], jobs)
        return results

    def bookkeeping(self, jobs, routes=None):
        """A Redis pipeline that writes the ledger entries and debounce keys of ``jobs``."""
        pipe = redis_client(self.app).pipeline(transaction=False)
        ledger.add_to(pipe, self.app, jobs, routes)
        add_debounce_keys(pipe, jobs)
        return pipe

    def add_wait(self, pipe):
        """Add Redis ``WAIT`` for ``ASYNC_REDIS_WAIT_REPLICAS`` replicas to
        ``pipe``, if any; return whether it was added."""
        replicas = celeryconfig.ASYNC_REDIS_WAIT_REPLICAS
        if replicas:
            pipe.execute_command("WAIT", replicas, int(celeryconfig.ASYNC_REDIS_WAIT_TIMEOUT * 1000))
        return bool(replicas)

    def replicated(self, replicas, jobs):
        """Log the jobs that fewer replicas than asked for acknowledged in time."""
        wanted = celeryconfig.ASYNC_REDIS_WAIT_REPLICAS
        if replicas < wanted:
            logger.warning(
                "%d job(s) reached %d of the %d replica(s) of ASYNC_REDIS_WAIT_REPLICAS within "
                "%g s: a failover now would lose them; is a replica down? %s",
                len(jobs),
                replicas,
                wanted,
                celeryconfig.ASYNC_REDIS_WAIT_TIMEOUT,
                ", ".join(f"{job.task.name}[{job.id}]" for job in jobs),
            )


_deliveries = {}


def delivery_for(app):
    """The :class:`Delivery` of ``app``, chosen once per broker setting."""
    key = (app, app.conf.broker_url, bool(app.conf.task_always_eager))
    if key not in _deliveries:
        if app.conf.task_always_eager:
            _deliveries[key] = EagerDelivery(app)
        elif ledger.keeps_ledger(app):
            _deliveries[key] = RedisDelivery(app)
        else:
            _deliveries[key] = Delivery(app)
    return _deliveries[key]
