"""Step 2: the Celery app and the thin tasks that send jobs to Plone.

Run a worker with::

    celery -A ploneintranet.asynctasks.celerytasks worker -l info

Settings come from :mod:`ploneintranet.asynctasks.celeryconfig`. Each task
only calls :func:`ploneintranet.asynctasks.worker.dispatch`; a
:class:`~ploneintranet.asynctasks.errors.DispatchError` (Plone down, 5xx,
timeout, conflict) is retried with exponential backoff and jitter, a refusal
(4xx, authorization) is not.
"""

from celery import Celery
from celery import Task
from celery import bootsteps
from celery import signals
from celery import states
from celery.utils import uuid
import logging
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks import ledger
from ploneintranet.asynctasks.broker import key_store
from ploneintranet.asynctasks.brokerloss import RestoreHeldJobs
from ploneintranet.asynctasks.delivery import DEBOUNCE_PREFIX
from ploneintranet.asynctasks.delivery import delivery_for
from ploneintranet.asynctasks.errors import AsyncTaskError
from ploneintranet.asynctasks.errors import DispatchError
from ploneintranet.asynctasks.errors import JobRefused
from ploneintranet.asynctasks.push import messages
from ploneintranet.asynctasks.wire import Job
from ploneintranet.asynctasks.wire import job_user
from ploneintranet.asynctasks.wire import reprs_for_monitors
from ploneintranet.asynctasks.worker import dispatch
import threading
import time


logger = logging.getLogger("ploneintranet.asynctasks")

app = Celery("ploneintranet.asynctasks")
app.config_from_object(celeryconfig)


class HideMessageContents(logging.Filter):
    """Celery's worker logs the whole message it cannot run (a task it does
    not know, a malformed message); a job's message carries the user's
    credentials, so only the error is kept."""

    starts = ("Received unregistered task", "Received invalid task message")

    def filter(self, record):
        if isinstance(record.msg, str) and record.msg.startswith(self.starts) and record.args:
            hidden = "(not logged: it may carry credentials)"
            record.args = (record.args[0],) + (hidden,) * (len(record.args) - 1)
        return True


logging.getLogger("celery.worker.consumer.consumer").addFilter(HideMessageContents())


class JobTask(Task):
    """Base of tasks that send a job: each job is in the
    :mod:`~ploneintranet.asynctasks.ledger` from when it is sent until it is
    finished; a debounced job that a later one of the same user for the same
    target replaced is skipped."""

    #: Its jobs go into the ledger: :meth:`after_return` crosses them out.
    ledgered = True

    def apply_async(self, args=None, kwargs=None, task_id=None, producer=None, **options):
        """Send a job. Whatever ``argsrepr`` and ``kwargsrepr`` it is given,
        its message shows monitors the url only
        (:func:`~ploneintranet.asynctasks.wire.reprs_for_monitors`). A job
        sent without a producer of the caller's own (``delay()``, Celery's
        retries, the ledger's resends) goes through
        :func:`~ploneintranet.asynctasks.delivery.delivery_for`, so it is
        in the ledger before it is sent."""
        options.update(reprs_for_monitors(args, kwargs))
        job = None
        if producer is None and not self.app.conf.task_always_eager:
            job = Job.from_call(self, args, kwargs, dict(options, task_id=task_id or uuid()))
        if job is None:
            return super().apply_async(args, kwargs, task_id=task_id, producer=producer, **options)
        return delivery_for(self.app).publish([job])[0]

    def __call__(self, url, data=None, headers=None, cookies=None):
        job = Job(self, url, data, userid=job_user(headers))
        if getattr(self.request, "eta", None) is not None and self.superseded(job):
            logger.info("%s[%s] for %s: superseded by a later job", self.name, self.request.id, url)
            return "superseded"
        return super().__call__(url, data, headers, cookies)

    def superseded(self, job):
        """True if a later debounced job of the same user for the same
        target replaced ``job`` (only jobs with an eta are debounced). The
        debounce keys are where Plone wrote them: in the broker's Redis, or
        with RabbitMQ in the result backend's
        (:func:`~ploneintranet.asynctasks.broker.key_store`)."""
        try:
            store = key_store(self.app, needed_for="debounce")
        except AsyncTaskError:
            return False  # Plone refuses debounced jobs without one
        latest = store.get(DEBOUNCE_PREFIX + job.fingerprint)
        return latest is not None and latest.decode() != self.request.id

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        # a retry is a new message of the same job: it stays in the ledger
        if status != states.RETRY and not self.request.is_eager:
            ledger.forget(self.app, task_id)


@signals.task_revoked.connect
def _forget_revoked_job(sender=None, request=None, **kwargs):
    """An expired or revoked job is finished too. ``sender`` is the task;
    ``request`` its request context (not always a worker request)."""
    if getattr(sender, "ledgered", False) and request is not None:
        ledger.forget(sender.app, request.id)


class LedgerSweep(bootsteps.StartStopStep):
    """Every ``ASYNC_SWEEP_INTERVAL`` seconds, send again the jobs a killed
    worker lost (:func:`ploneintranet.asynctasks.ledger.sweep`), in a thread
    of its own.

    Not on the worker's timer: with a Redis broker the timer fires in
    kombu's event loop, the thread that takes messages from Redis, and a
    sweep that sends a thousand lost jobs again (about 1.5 ms each) stopped
    every delivery of that worker for 1.3 to 1.9 s.
    """

    def __init__(self, worker, **kwargs):
        self.thread = None
        self.stopping = threading.Event()

    def start(self, worker):
        if not ledger.keeps_ledger(worker.app):
            return  # RabbitMQ gives the jobs of a worker that died back itself
        self.stopping.clear()
        self.thread = threading.Thread(target=self.run, args=(worker,), name="ledger-sweep", daemon=True)
        self.thread.start()

    def run(self, worker):
        """Sweep every interval until :meth:`stop`."""
        while not self.stopping.wait(celeryconfig.ASYNC_SWEEP_INTERVAL):
            self.sweep(worker)

    def sweep(self, worker):
        """One sweep; a failure is logged, and the next interval tries again."""
        try:
            ledger.sweep(worker.app, worker.hostname)
        except Exception as error:
            logger.warning(
                "could not look for lost jobs (%s: %s); trying again in %g s",
                type(error).__name__,
                error,
                celeryconfig.ASYNC_SWEEP_INTERVAL,
            )

    def stop(self, worker):
        # a sweep under way finishes; the thread is a daemon, so a hung one
        # does not keep the worker up
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
            self.thread = None


app.steps["worker"].add(LedgerSweep)
# Jobs held when the connection to Redis breaks go back once it is up again.
app.steps["consumer"].add(RestoreHeldJobs)


#: Options shared by every task that sends a job to Plone.
JOB_OPTIONS = dict(
    base=JobTask,
    autoretry_for=(DispatchError,),
    # A refusal is an expected outcome: logged in one line, without traceback.
    throws=(JobRefused,),
    retry_backoff=True,
    retry_backoff_max=celeryconfig.ASYNC_RETRY_BACKOFF_MAX,
    retry_jitter=True,
    max_retries=celeryconfig.ASYNC_MAX_RETRIES,
)


@app.task(**JOB_OPTIONS)
def post(url, data=None, headers=None, cookies=None):
    """POST a job to a Plone view; return the HTTP status."""
    return dispatch(url, data, headers, cookies).status_code


@app.task(**JOB_OPTIONS)
def reindex_object(url, data=None, headers=None, cookies=None):
    """Reindex a content object through its ``@@reindex_object`` view."""
    return dispatch(url, data, headers, cookies).status_code


class PushingJobTask(JobTask):
    """Base of tasks whose user is told by push when the job finally failed
    (after its last retry, or refused)."""

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        url, data, headers, cookies = (list(args) + [None] * 4)[:4]
        messages.publish_job(self.name, messages.FAILED, data, headers)


def _preview(task, url, data, headers, cookies):
    status = dispatch(url, data, headers, cookies).status_code
    messages.publish_job(task.name, messages.DONE, data, headers)
    return status


@app.task(**dict(JOB_OPTIONS, base=PushingJobTask))
def generate_preview(url, data=None, headers=None, cookies=None):
    """Make a preview through ``@@async-generate-preview``, then push
    ``done`` to the user's browsers."""
    return _preview(generate_preview, url, data, headers, cookies)


@app.task(**dict(JOB_OPTIONS, base=PushingJobTask))
def generate_and_add_preview(url, data=None, headers=None, cookies=None):
    """The seed's name of :func:`generate_preview` (its view: ``@@generate-previews``)."""
    return _preview(generate_and_add_preview, url, data, headers, cookies)


@app.task
def add(x, y, delay=1):
    """Add two numbers after ``delay`` seconds (upstream's signature): the
    round trip that ``@@async-status`` checks, with ``delay=0``."""
    time.sleep(delay)
    return x + y
