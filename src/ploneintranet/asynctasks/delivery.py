"""The one road of a job to the broker.

:func:`delivery_for` chooses, once per broker, how a
:class:`~ploneintranet.asynctasks.wire.Job` is sent: run at once (eager), by Celery's own
``apply_async`` in one kombu publish batch (:class:`Delivery`), or, with a
Redis broker, after their :mod:`~ploneintranet.asynctasks.ledger` entries and
debounce keys are written in one pipeline (:class:`RedisDelivery`).
"""

import logging
from ploneintranet.asynctasks import ledger
from ploneintranet.asynctasks import rediswriter
from ploneintranet.asynctasks.broker import redis_client
from ploneintranet.asynctasks.wire import masked_url


logger = logging.getLogger("ploneintranet.asynctasks")

#: Followed by a job's fingerprint: the id of the latest of its debounced jobs.
DEBOUNCE_PREFIX = "ploneintranet.asynctasks:debounce:"

class Delivery:
    """Celery's own road: each job by its task's ``apply_async``, all of
    them in one kombu publish batch where the transport batches."""

    def __init__(self, app):
        self.app = app

    def check(self):
        """Make a round trip to the broker; raise what it raises.

        Not through Celery's producer pool: a pooled connection may be
        stale, and a broken one must not be handed back to the pool."""
        with self.app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)

    def publish(self, jobs):
        """Send ``jobs``; return their ``AsyncResult``. Raises what the
        broker raises."""
        return self.by_celery(jobs)

    def by_celery(self, jobs):
        """Send ``jobs`` by ``apply_async``, in one kombu publish batch."""
        with self.app.producer_or_acquire() as producer, producer.batch():
            return [job.task.apply_async(job.args, producer=producer, **job.options) for job in jobs]

    def send(self, jobs):
        """Send the jobs of a committed transaction, together; should that
        fail, one by one by ``apply_async`` (with Celery's publish retries;
        delivery stays at least once). A job that cannot be sent is logged
        as ``LOST JOB``: its data is committed, so a site administrator must
        redo the work. Never raises."""
        try:
            self.publish(jobs)
            return
        except Exception as error:
            logger.warning(
                "could not send %d job(s) together (%s: %s); sending them one by one",
                len(jobs), type(error).__name__, error,
            )
        for job in jobs:
            try:
                self.by_celery([job])
            except Exception:
                # credentials are not logged: the url and the user only
                logger.exception(
                    "LOST JOB: could not send %s[%s] for %s as %s to %s after the "
                    "transaction committed",
                    job.task.name, job.id, job.url, job.userid, masked_url(self.app.conf.broker_url),
                )


class EagerDelivery(Delivery):
    """``ASYNC_ENABLED=false``: every job runs at once, in this process."""

    def check(self):
        """Nothing to check: there is no broker."""

    def by_celery(self, jobs):
        """Run ``jobs`` now; return their ``EagerResult``."""
        return [job.task.apply_async(job.args, **job.options) for job in jobs]


class RedisDelivery(Delivery):
    """A Redis broker: the jobs' ledger entries, debounce keys and messages
    in one pipeline (:mod:`~ploneintranet.asynctasks.rediswriter`), or, for
    jobs that writer cannot write exactly, the entries and keys first and the
    jobs then by Celery's road."""

    def check(self):
        """Ping the broker's Redis."""
        redis_client(self.app).ping()

    def publish(self, jobs):
        """Send ``jobs`` in one round trip where :func:`.rediswriter.can_write`;
        return their ``AsyncResult``. Raises what Redis raises."""
        if not rediswriter.can_write(self.app, jobs):
            return self.by_celery(jobs)
        routes = {}
        pipe = self.bookkeeping(jobs, routes)
        rediswriter.write(pipe, self.app, jobs, [ledger.queue_of(self.app, job, routes) for job in jobs])
        pipe.execute()
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
                len(jobs), type(error).__name__, error,
            )
        return super().by_celery(jobs)

    def bookkeeping(self, jobs, routes=None):
        """A Redis pipeline that writes the ledger entries and debounce keys of ``jobs``."""
        pipe = redis_client(self.app).pipeline(transaction=False)
        ledger.add_to(pipe, self.app, jobs, routes)
        for job in jobs:
            if job.debounce:
                pipe.set(DEBOUNCE_PREFIX + job.fingerprint, job.id, ex=int(job.debounce) + 3600)
        return pipe


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
