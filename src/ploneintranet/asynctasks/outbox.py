"""The outbox: the jobs of saves that committed while the broker was down.

When the broker does not answer at commit, the user's save is kept and its
jobs are written into the site's outbox, in the same transaction, so they are
saved exactly when the save is (``ASYNC_WHEN_BROKER_DOWN=keep``, the default;
``refuse`` makes the whole save fail instead, as before). Keys are the time a
job was kept and its task id: concurrent saves add different keys, which the
ZODB's BTrees merge without a conflict.

The jobs go out, oldest first, from the first request any Plone instance
serves after the broker answers again (:func:`send_waiting`, at most every
``ASYNC_OUTBOX_RETRY`` seconds per process, after that request's own
commit): a transaction of their own takes them out of the outbox and sends
them when it commits. Two instances that take the same jobs conflict in the
ZODB, and only one of them sends them.

A broker that answers the check at commit and stops answering before the
jobs are sent (a moment later) leaves jobs of a committed transaction unsent:
they are held in the process until the request is over, then written into
the outbox in a transaction of their own (:func:`write_unsent`).

The outbox serves the jobs of this package's Celery app
(:mod:`~ploneintranet.asynctasks.celerytasks`); a job of another app's task
cannot be kept.
"""

from datetime import datetime
import logging
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks.celerytasks import app as celery_app
from ploneintranet.asynctasks.delivery import delivery_for
from ploneintranet.asynctasks.jobqueue import OUTBOX as KEY
from ploneintranet.asynctasks.jobqueue import described
from ploneintranet.asynctasks.jobqueue import jobs_of_transaction
from ploneintranet.asynctasks.jobqueue import keep
from ploneintranet.asynctasks.jobqueue import take_unsent
from ploneintranet.asynctasks.wire import Job
import time
import transaction
from ZODB.POSException import ConflictError
from zope.annotation.interfaces import IAnnotations
from zope.component.hooks import getSite


logger = logging.getLogger("ploneintranet.asynctasks")

#: Jobs one request takes out of the outbox and sends.
BATCH = 200

_last_look = {}


def waiting(site):
    """``(jobs, since)``: how many jobs wait in the outbox of ``site``, and
    since when (seconds since the epoch) the oldest waits; ``(0, None)``."""
    box = IAnnotations(site).get(KEY)
    if not box:
        return 0, None
    return len(box), box[box.minKey()]["kept"]


def _job(record):
    task = celery_app.tasks.get(record["task"])
    if task is None:
        logger.error(
            "LOST JOB: %s for %s waited in the outbox, and this Celery app does not know its task",
            record["task"],
            record["url"],
        )
        return None
    options = dict(record["options"])
    for name in ("eta", "expires"):
        if isinstance(options.get(name), str):
            options[name] = datetime.fromisoformat(options[name])
    return Job(
        task,
        record["url"],
        record["data"],
        record["headers"],
        record["cookies"],
        options=options,
        userid=record["userid"],
        debounce=record["debounce"],
    )


def send_waiting(event):
    """After a request's commit (``IPubSuccess``): keep the jobs its commit
    could not send (:func:`write_unsent`); then, if jobs wait in this site's
    outbox and the broker answers, take up to :data:`BATCH` of them,
    oldest first, and send them in a transaction of their own. Never raises:
    the user's request is done."""
    site = getSite()
    if site is None or IAnnotations(site, None) is None:
        return
    path = "/".join(site.getPhysicalPath())
    write_unsent(path)
    now = time.monotonic()
    if now - _last_look.get(path, -celeryconfig.ASYNC_OUTBOX_RETRY) < celeryconfig.ASYNC_OUTBOX_RETRY:
        return
    _last_look[path] = now
    box = IAnnotations(site).get(KEY)
    if not box:
        return
    try:
        delivery_for(celery_app).check()
    except Exception:
        return  # still down; the next look is in ASYNC_OUTBOX_RETRY seconds
    txn = transaction.begin()
    try:
        keys = list(box.keys()[:BATCH])
        queued = jobs_of_transaction()
        for job in filter(None, (_job(box.pop(key)) for key in keys)):
            queued.add(job)
        txn.note(f"ploneintranet.asynctasks: {len(keys)} job(s) of the outbox sent")
        transaction.commit()
        logger.info("%d job(s) that waited in the outbox of %s sent; %d wait", len(keys), path, len(box))
        write_unsent(path)  # the broker may have gone again
    except ConflictError:
        transaction.abort()  # another instance took them meanwhile
    except Exception:
        transaction.abort()
        logger.exception("could not send the jobs waiting in the outbox of %s", path)


def write_unsent(path):
    """Write the jobs of committed transactions that could not be sent
    (:func:`.jobqueue.keep_unsent`) into the outbox of the site at ``path``,
    the current site, in a transaction of their own."""
    jobs = take_unsent(path)
    if not jobs:
        return
    for _attempt in range(3):
        transaction.begin()
        try:
            keep(jobs)
            transaction.get().note(f"ploneintranet.asynctasks: {len(jobs)} job(s) not sent kept in the outbox")
            transaction.commit()
        except ConflictError:
            transaction.abort()  # it adds new keys only: the next attempt merges
            continue
        except Exception:
            transaction.abort()
            logger.exception("could not keep %d job(s) in the outbox of %s", len(jobs), path)
            break
        logger.warning("%d job(s) not sent after their commit kept in the outbox of %s", len(jobs), path)
        return
    for job in jobs:
        logger.error("LOST JOB: %s[%s] for %s as %s was not sent, and the outbox could not keep it", *described(job))
