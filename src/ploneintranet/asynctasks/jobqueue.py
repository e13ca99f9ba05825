"""Jobs wait for the user's transaction: sent when it commits, never if it
aborts, and collapsed when identical.

A transaction that enqueued jobs gets one :class:`JobsOfTransaction` data
manager. In the two-phase commit it checks, while the transaction can still
be aborted, that the broker answers; if not, the whole transaction fails with
:class:`~ploneintranet.asynctasks.errors.AsyncTaskError`, so the user's save
and its jobs are lost together and the user is told. After the commit it
hands the jobs to the :func:`~ploneintranet.asynctasks.delivery.delivery_for`
their Celery app.
"""

import logging
from ploneintranet.asynctasks.delivery import delivery_for
from ploneintranet.asynctasks.errors import AsyncTaskError
from ploneintranet.asynctasks.wire import masked_url
import transaction
from transaction.interfaces import ISavepointDataManager
from zope.interface import implementer


logger = logging.getLogger("ploneintranet.asynctasks")


@implementer(ISavepointDataManager)
class JobsOfTransaction:
    """The jobs one transaction enqueued; a data manager of that transaction."""

    def __init__(self, transaction_manager):
        self.transaction_manager = transaction_manager
        self.jobs = {}

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

    def sortKey(self):
        # Vote after the ZODB, so no broker work is done for a failing commit.
        return "~ploneintranet.asynctasks"

    def tpc_vote(self, txn):
        for app in self.by_app():
            try:
                delivery_for(app).check()
            except Exception as error:
                raise AsyncTaskError(
                    f"the job queue at {masked_url(app.conf.broker_url)} does not "
                    f"answer ({type(error).__name__}: {error}), so nothing was "
                    "saved; try again in a moment, and tell the site "
                    "administrator if it keeps happening"
                ) from error

    def tpc_finish(self, txn):
        apps, self.jobs = self.by_app(), {}
        for app, jobs in apps.items():
            delivery_for(app).send(jobs)

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
