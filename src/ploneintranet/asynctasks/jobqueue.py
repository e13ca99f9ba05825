"""Jobs wait for the user's transaction: sent when it commits, never if it
aborts, and collapsed when identical or debounced.

A transaction that enqueued jobs gets one :class:`JobsOfTransaction` data
manager. In the two-phase commit it checks, while the transaction can still
be aborted, that the broker answers; if not, the whole transaction fails with
:class:`~ploneintranet.asynctasks.errors.AsyncTaskError`, so the user's save
and its jobs are lost together and the user is told. After the commit it
writes the jobs into the :mod:`~ploneintranet.asynctasks.ledger` and
publishes them on one broker connection.
"""

import json
import logging
from ploneintranet.asynctasks import ledger
from ploneintranet.asynctasks import publish
from ploneintranet.asynctasks.broker import is_redis
from ploneintranet.asynctasks.broker import redis_client
from ploneintranet.asynctasks.errors import AsyncTaskError
from ploneintranet.asynctasks.urls import masked_url
import transaction
from transaction.interfaces import ISavepointDataManager
import uuid
from zope.interface import implementer


logger = logging.getLogger("ploneintranet.asynctasks")

#: Form field that plone.protect checks; it differs per job, so it is not part
#: of what makes two jobs identical.
AUTHENTICATOR_FIELD = "_authenticator"
DEBOUNCE_PREFIX = "ploneintranet.asynctasks:debounce:"


def fingerprint(task_name, url, data, userid):
    """What makes two jobs the same: task, url, data (without the token) and
    the user they run as (``None``: anonymous), so that one user's job never
    replaces another's."""
    data = {k: v for k, v in (data or {}).items() if k != AUTHENTICATOR_FIELD}
    return json.dumps([task_name, url, data, userid], sort_keys=True)


def superseded(task, url, data, userid):
    """True if a later debounced job of the same user for the same target
    replaced this one."""
    if getattr(task.request, "eta", None) is None:
        return False  # a debounced job is delayed; skip the Redis round trip
    key = DEBOUNCE_PREFIX + fingerprint(task.name, url, data, userid)
    try:
        client = redis_client(task.app)
    except AsyncTaskError:
        return False
    latest = client.get(key)
    if latest is None:
        return False
    return latest.decode() != task.request.id


@implementer(ISavepointDataManager)
class JobsOfTransaction:
    """The jobs one transaction enqueued; a data manager of that transaction."""

    def __init__(self, transaction_manager):
        self.transaction_manager = transaction_manager
        self.jobs = {}

    def add(self, task, args, options, userid, debounce=None):
        """Queue a job; return the ``AsyncResult`` it will have."""
        key = fingerprint(task.name, args[0], args[1], userid)
        if key not in self.jobs:
            options.setdefault("task_id", str(uuid.uuid4()))
            # the arguments hold credentials (and their repr costs more than
            # the rest of the message); any task's fallback to apply_async too
            options.update(publish.reprs_for_monitors(args))
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
            try:
                _ping(app)
            except Exception as error:
                raise AsyncTaskError(
                    f"the job queue at {masked_url(app.conf.broker_url)} does not "
                    f"answer ({type(error).__name__}: {error}), so nothing was "
                    "saved; try again in a moment, and tell the site "
                    "administrator if it keeps happening"
                ) from error

    def tpc_finish(self, txn):
        jobs, self.jobs = self.jobs, {}
        for app in {task.app for task, *_ in jobs.values()}:
            mine = [job for job in jobs.values() if job[0].app is app]
            if app.conf.task_always_eager:
                for job in mine:
                    _send(None, *job)
                continue
            triples = [(task, args, options) for task, args, options, *_ in mine]
            if publish.can_send(app, triples):
                try:
                    publish.send(app, triples, _debounce_keys(mine))
                    continue
                except Exception as error:
                    logger.warning(
                        "could not send %d job(s) in one round trip (%s: %s); "
                        "sending them one by one", len(mine), type(error).__name__, error,
                    )
            # Into the ledger first, so a job lost on its way is sent again.
            ledger.record(app, triples)
            # One pooled connection for all the jobs of the transaction.
            with ledger.recorded(), app.producer_or_acquire() as producer:
                _send_together(producer, mine)

    def abort(self, txn):
        self._forget()

    def tpc_abort(self, txn):
        self._forget()

    def _forget(self):
        if self.jobs:
            logger.info("transaction aborted: %d job(s) not sent", len(self.jobs))
        self.jobs = {}

    def savepoint(self):
        """Jobs queued after a savepoint are dropped when it is rolled back."""
        return _Savepoint(self, dict(self.jobs))


class _Savepoint:
    def __init__(self, manager, jobs):
        self.manager = manager
        self.jobs = jobs

    def rollback(self):
        self.manager.jobs = dict(self.jobs)


def _send_together(producer, jobs):
    """Send ``jobs`` in one round trip where the broker allows it (Redis,
    kombu 5.7); should that fail, send them again one by one, each with
    Celery's publish retries (delivery stays at least once)."""
    if len(jobs) == 1 or not getattr(producer, "supports_batch_publish", False):
        for job in jobs:
            _send(producer, *job)
        return
    buffered = []
    try:
        with producer.batch():
            buffered = [job for job in jobs if _send(producer, *job)]
    except Exception as error:
        logger.warning(
            "could not send %d job(s) in one round trip (%s: %s); sending "
            "them one by one", len(buffered), type(error).__name__, error,
        )
        for job in buffered:
            _send(producer, *job)


def _debounce_key(task, args, options, userid, debounce):
    """(key, task id, seconds): the debounced job that is the latest."""
    key = DEBOUNCE_PREFIX + fingerprint(task.name, args[0], args[1], userid)
    return key, options["task_id"], int(debounce) + 3600


def _debounce_keys(jobs):
    return [
        _debounce_key(task, args, options, userid, debounce)
        for task, args, options, userid, debounce in jobs
        if debounce
    ]


def _send(producer, task, args, options, userid, debounce):
    """Send one job; True if it was handed over, else log LOST JOB."""
    try:
        if debounce:
            key, task_id, seconds = _debounce_key(task, args, options, userid, debounce)
            redis_client(task.app, needed_for="debounce").set(key, task_id, ex=seconds)
        task.apply_async(args, producer=producer, **options)
        return True
    except Exception:
        # The data is committed; the job can only be reported, for a site
        # administrator to redo the work (credentials are not logged).
        logger.exception(
            "LOST JOB: could not send %s[%s] for %s as %s to %s after the "
            "transaction committed",
            task.name,
            options["task_id"],
            args[0],
            userid,
            masked_url(task.app.conf.broker_url),
        )


def _ping(app):
    """Make a round trip to the broker of ``app``.

    Not through Celery's producer pool: a pooled connection may be stale, and
    a broken one must not be handed back to the pool.
    """
    if is_redis(app.conf.broker_url):
        redis_client(app).ping()
    else:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)


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
