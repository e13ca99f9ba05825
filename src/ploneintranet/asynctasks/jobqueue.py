"""Jobs wait for the user's transaction: sent when it commits, never if it
aborts, and collapsed when identical or debounced.

A transaction that enqueued jobs gets one :class:`JobsOfTransaction` data
manager. In the two-phase commit it checks, while the transaction can still
be aborted, that the broker answers; if not, the whole transaction fails with
:class:`~ploneintranet.asynctasks.errors.AsyncTaskError`, so the user's save
and its jobs are lost together and the user is told. After the commit it
publishes the jobs on one broker connection.
"""

from ploneintranet.asynctasks.errors import AsyncTaskError
from ploneintranet.asynctasks.urls import masked_url
from transaction.interfaces import IDataManager
from zope.interface import implementer

import json
import logging
import redis
import transaction
import uuid


logger = logging.getLogger("ploneintranet.asynctasks")

#: Form field that plone.protect checks; it differs per job, so it is not part
#: of what makes two jobs identical.
AUTHENTICATOR_FIELD = "_authenticator"
DEBOUNCE_PREFIX = "ploneintranet.asynctasks:debounce:"


def fingerprint(task_name, url, data):
    """What makes two jobs the same: task, url and data (without the token)."""
    data = {k: v for k, v in (data or {}).items() if k != AUTHENTICATOR_FIELD}
    return json.dumps([task_name, url, data], sort_keys=True)


_redis_clients = {}


def redis_client(app):
    """A Redis client for the broker of ``app`` (debounce bookkeeping)."""
    url = app.conf.broker_url
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise AsyncTaskError(
            f"debounce needs a Redis broker, and the broker is {masked_url(url)}; "
            "use Redis or drop debounce from the task class"
        )
    if url not in _redis_clients:
        _redis_clients[url] = redis.Redis.from_url(url, socket_timeout=5)
    return _redis_clients[url]


def superseded(task, url, data):
    """True if a later debounced job for the same target replaced this one."""
    key = DEBOUNCE_PREFIX + fingerprint(task.name, url, data)
    try:
        client = redis_client(task.app)
    except AsyncTaskError:
        return False
    latest = client.get(key)
    if latest is None:
        return False
    return latest.decode() != task.request.id


@implementer(IDataManager)
class JobsOfTransaction:
    """The jobs one transaction enqueued; a data manager of that transaction."""

    def __init__(self, transaction_manager):
        self.transaction_manager = transaction_manager
        self.jobs = {}
        self.producers = {}

    def add(self, task, args, options, userid, debounce=None):
        """Queue a job; return the ``AsyncResult`` it will have."""
        key = fingerprint(task.name, args[0], args[1])
        if key not in self.jobs:
            options.setdefault("task_id", str(uuid.uuid4()))
            if debounce:
                options.setdefault("countdown", debounce)
            self.jobs[key] = (task, args, options, userid, debounce)
        task, _, options, _, _ = self.jobs[key]
        return task.AsyncResult(options["task_id"])

    def sortKey(self):
        # Vote after the ZODB, so no broker work is done for a failing commit.
        return "~ploneintranet.asynctasks"

    def tpc_begin(self, txn):
        pass

    def commit(self, txn):
        pass

    def tpc_vote(self, txn):
        for app in {task.app for task, *_ in self.jobs.values()}:
            if app.conf.task_always_eager:
                continue
            producer = app.producer_pool.acquire(block=True, timeout=10)
            self.producers[app] = producer
            try:
                _ping(producer.connection)
            except Exception as error:
                raise AsyncTaskError(
                    f"the job queue at {masked_url(app.conf.broker_url)} does not "
                    f"answer ({type(error).__name__}: {error}), so nothing was "
                    "saved; try again in a moment, and tell the site "
                    "administrator if it keeps happening"
                ) from error

    def tpc_finish(self, txn):
        try:
            for task, args, options, userid, debounce in self.jobs.values():
                self._send(task, args, options, userid, debounce)
        finally:
            self._release()

    def _send(self, task, args, options, userid, debounce):
        producer = self.producers.get(task.app)
        try:
            if debounce:
                key = DEBOUNCE_PREFIX + fingerprint(task.name, args[0], args[1])
                ttl = int(debounce) + 3600
                redis_client(task.app).set(key, options["task_id"], ex=ttl)
            task.apply_async(args, producer=producer, **options)
        except Exception:
            # The data is committed; the job can only be reported, for a
            # site administrator to redo the work (credentials are not logged).
            logger.exception(
                "LOST JOB: could not send %s[%s] for %s as %s to %s after the "
                "transaction committed",
                task.name,
                options["task_id"],
                args[0],
                userid,
                masked_url(task.app.conf.broker_url),
            )

    def abort(self, txn):
        self._forget(txn)

    def tpc_abort(self, txn):
        self._forget(txn)

    def _forget(self, txn):
        if self.jobs:
            logger.info("transaction aborted: %d job(s) not sent", len(self.jobs))
        self.jobs.clear()
        self._release()

    def _release(self):
        for producer in self.producers.values():
            producer.release()
        self.producers.clear()


def _ping(connection):
    """Make a round trip to the broker (a pooled connection may be stale)."""
    connection.ensure_connection(max_retries=1)
    client = getattr(connection.default_channel, "client", None)
    if client is not None:  # Redis
        client.ping()


def jobs_of_transaction():
    """The :class:`JobsOfTransaction` of the current transaction."""
    txn = transaction.get()
    try:
        return txn.data(JobsOfTransaction)
    except KeyError:
        jobs = JobsOfTransaction(transaction.manager)
        txn.join(jobs)
        txn.set_data(JobsOfTransaction, jobs)
        return jobs
