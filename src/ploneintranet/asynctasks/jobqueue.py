"""Jobs wait for the user's transaction: sent when it commits, never if it
aborts, and collapsed when identical.

A transaction that enqueued jobs gets one :class:`JobsOfTransaction` data
manager. Before the commit it checks that the broker answers; if not, it
keeps the jobs in the site's outbox, written with the user's save
(:mod:`~ploneintranet.asynctasks.outbox` sends them when the broker is back),
or, with ``ASYNC_WHEN_BROKER_DOWN=refuse``, fails the whole transaction with
:class:`~ploneintranet.asynctasks.errors.AsyncTaskError`, so the user's save
and its jobs are lost together and the user is told. After the commit it
hands the jobs to the :func:`~ploneintranet.asynctasks.delivery.delivery_for`
their Celery app; those it could not send (the broker went down in between)
go into the outbox after the request (:func:`keep_unsent`).
"""

from BTrees.OOBTree import OOBTree
from datetime import datetime
import logging
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks.delivery import delivery_for
from ploneintranet.asynctasks.errors import AsyncTaskError
from ploneintranet.asynctasks.wire import masked_url
import threading
import time
import transaction
from transaction.interfaces import ISavepointDataManager
from zope.annotation.interfaces import IAnnotations
from zope.component.hooks import getSite
from zope.interface import implementer


logger = logging.getLogger("ploneintranet.asynctasks")

#: The annotation of a site that holds its outbox: an ``OOBTree`` of
#: ``"<time kept> <task id>"`` -> the job as a dict.
OUTBOX = "ploneintranet.asynctasks.outbox"

# site path -> jobs of committed transactions not sent (keep_unsent)
_unsent = {}
_unsent_lock = threading.Lock()


@implementer(ISavepointDataManager)
class JobsOfTransaction:
    """The jobs one transaction enqueued; a data manager of that transaction."""

    def __init__(self, transaction_manager):
        self.transaction_manager = transaction_manager
        self.jobs = {}
        self.deliveries = {}  # the app's delivery, once its broker answered

    def add(self, job):
        """Queue a :class:`~ploneintranet.asynctasks.wire.Job`, unless an
        identical one is queued already; return the ``AsyncResult`` the
        queued one will have."""
        job = self.jobs.setdefault(job.fingerprint, job)
        return job.task.AsyncResult(job.id)

    def by_app(self):
        """``{Celery app: its jobs}``."""
        apps = {}
        for job in self.jobs.values():
            apps.setdefault(job.task.app, []).append(job)
        return apps

    def before_commit(self):
        """Before the ZODB commits: check each broker; keep the jobs of one
        that does not answer in the site's outbox, or refuse."""
        for app, jobs in self.by_app().items():
            try:
                self.check(app)
            except AsyncTaskError:
                if celeryconfig.ASYNC_WHEN_BROKER_DOWN == "refuse" or not keep(jobs):
                    raise
                for job in jobs:
                    del self.jobs[job.fingerprint]
                logger.warning(
                    "the job queue at %s does not answer: %d job(s) kept in the site's "
                    "outbox, sent when it answers again",
                    masked_url(app.conf.broker_url),
                    len(jobs),
                )

    def check(self, app):
        """Make a round trip to the broker of ``app``, or raise
        :class:`~ploneintranet.asynctasks.errors.AsyncTaskError`."""
        delivery = delivery_for(app)
        try:
            delivery.check()
        except Exception as error:
            raise AsyncTaskError(
                f"the job queue at {masked_url(app.conf.broker_url)} does not "
                f"answer ({type(error).__name__}: {error}), so nothing was "
                "saved; try again in a moment, and tell the site "
                "administrator if it keeps happening"
            ) from error
        self.deliveries[app] = delivery

    def sortKey(self):
        return "~ploneintranet.asynctasks"

    def tpc_vote(self, txn):
        # jobs queued after before_commit ran (by a later before-commit hook)
        for app in set(self.by_app()) - set(self.deliveries):
            self.check(app)

    def tpc_finish(self, txn):
        apps, self.jobs = self.by_app(), {}
        for app, jobs in apps.items():
            unsent = self.deliveries[app].send(jobs)
            if unsent:
                keep_unsent(unsent)

    def abort(self, txn):
        if self.jobs:
            logger.info("transaction aborted: %d job(s) not sent", len(self.jobs))
        self.jobs = {}

    tpc_abort = abort

    def tpc_begin(self, txn):
        pass

    commit = tpc_begin

    def savepoint(self):
        """Jobs queued after a savepoint are dropped when it is rolled back."""
        return _Savepoint(self, dict(self.jobs))


class _Savepoint:
    def __init__(self, manager, jobs):
        self.manager, self.jobs = manager, jobs

    def rollback(self):
        self.manager.jobs = dict(self.jobs)


def keep(jobs):
    """Write ``jobs`` (:class:`~ploneintranet.asynctasks.wire.Job`) into the
    outbox of the current site, in this transaction; False without a site."""
    site = getSite()
    annotations = IAnnotations(site, None) if site is not None else None
    if annotations is None:
        return False
    box = annotations.get(OUTBOX)
    if box is None:
        box = annotations[OUTBOX] = OOBTree()
    now = time.time()
    for job in jobs:
        options = {
            name: value.isoformat() if isinstance(value, datetime) else value for name, value in job.options.items()
        }
        box[f"{now:017.6f} {job.id}"] = {
            "task": job.task.name,
            "url": job.url,
            "data": job.data,
            "headers": job.headers,
            "cookies": job.cookies,
            "options": options,
            "userid": job.userid,
            "debounce": job.debounce,
            "kept": now,
        }
    return True


def keep_unsent(jobs):
    """Hold ``jobs`` of a committed transaction that could not be sent (the
    broker stopped answering between the check and the send) until the
    request is over, when :func:`.outbox.send_waiting` writes them into the
    outbox of the current site (:func:`take_unsent`). Without a site they
    are logged as ``LOST JOB``."""
    site = getSite()
    if site is None:
        for job in jobs:
            logger.error("LOST JOB: %s[%s] for %s as %s was not sent, and no site keeps it", *described(job))
        return
    path = "/".join(site.getPhysicalPath())
    with _unsent_lock:
        _unsent.setdefault(path, []).extend(jobs)
    logger.warning("%d job(s) of a committed transaction not sent: they go into the outbox of %s", len(jobs), path)


def take_unsent(path):
    """The jobs :func:`keep_unsent` holds for the site at ``path``, taken."""
    with _unsent_lock:
        return _unsent.pop(path, [])


def described(job):
    # credentials are never logged: the task, id, url and user only
    return job.task.name, job.id, job.url, job.userid


def jobs_of_transaction():
    """The :class:`JobsOfTransaction` of the current transaction."""
    txn = transaction.get()
    try:
        return txn.data(JobsOfTransaction)
    except KeyError:
        jobs = JobsOfTransaction(transaction.manager)
        txn.join(jobs)
        txn.addBeforeCommitHook(jobs.before_commit)
        txn.set_data(JobsOfTransaction, jobs)
        return jobs
