"""Views of the fault tests: many jobs at once, and jobs that count their runs.

Every job here posts a ``key`` to ``@@test-count-run``, which adds one to that
key in an OOBTree on the context (concurrent jobs touch different keys, so
they rarely conflict), so a test can tell lost jobs from jobs that ran twice.
"""

from BTrees.OOBTree import OOBTree
from ploneintranet.asynctasks import tasks
from ploneintranet.asynctasks.browser.views import ProtectedJobView
from Products.Five.browser import BrowserView
import threading
import transaction
from ZODB.POSException import ConflictError
from zope.annotation.interfaces import IAnnotations


RUNS_KEY = "ploneintranet.asynctasks.tests.runs"

# Attempts of @@test-conflicting-job per key, in this process (Plone runs in
# the test process, so the test can read them).
conflict_attempts = {}
_conflict_lock = threading.Lock()


def prepare_runs(context):
    """Give ``context`` an empty tree of runs; commit before enqueueing, so
    the first jobs do not race to create it."""
    IAnnotations(context)[RUNS_KEY] = OOBTree()


def runs(context):
    """``{key: number of times a job with that key ran}`` on ``context``."""
    return dict(IAnnotations(context).get(RUNS_KEY, {}))


def enqueue_counted(context, request, key, url="@@test-count-run", options=None, **data):
    """Enqueue a Post for ``key`` to ``url`` (with Celery ``options``);
    return its result."""
    return tasks.Post(context, request)(url=url, data=dict(data, key=key), **(options or {}))


class EnqueueManyView(BrowserView):
    """``@@test-enqueue-many?count=n&prefix=p``: enqueue n counted jobs with
    keys ``p-0`` ... in this one request; they are sent when it commits.
    ``url`` and ``failures`` go to ``@@test-conflicting-job`` instead;
    ``queue`` and ``countdown`` are passed to Celery. Returns their task
    ids, one a line."""

    def __call__(self):
        form = self.request.form
        extra = {"url": form["url"], "failures": form["failures"]} if "url" in form else {}
        options = {}
        if "queue" in form:
            options["queue"] = form["queue"]
        if "countdown" in form:
            options["countdown"] = int(form["countdown"])
        extra["options"] = options
        results = [
            enqueue_counted(self.context, self.request, f"{form['prefix']}-{index}", **extra)
            for index in range(int(form["count"]))
        ]
        return "\n".join(result.id for result in results)


class CountRunView(ProtectedJobView):
    """``@@test-count-run``: add one to the runs of the posted ``key``."""

    def run(self):
        key = self.request.form["key"]
        tree = IAnnotations(self.context)[RUNS_KEY]
        tree[key] = tree.get(key, 0) + 1
        return "counted"


# Called, if set, by a before-commit hook of @@test-retitle-and-enqueue that
# runs after the job queue's check of the broker (hooks run in the order added).
after_the_broker_check = None


class RetitleAndEnqueueView(ProtectedJobView):
    """``@@test-retitle-and-enqueue``: a user's save that also enqueues a job:
    sets the posted ``title`` and enqueues a counted job for ``key``; calls
    :data:`after_the_broker_check` between the broker check and the commit."""

    def run(self):
        self.context.title = self.request.form["title"]
        result = enqueue_counted(self.context, self.request, self.request.form["key"])
        if after_the_broker_check is not None:
            transaction.get().addBeforeCommitHook(after_the_broker_check)
        return result.id


class ConflictingJobView(ProtectedJobView):
    """``@@test-conflicting-job``: raise ConflictError for the first
    ``failures`` attempts at ``key`` in this process, then count a run."""

    def run(self):
        key = self.request.form["key"]
        with _conflict_lock:
            attempt = conflict_attempts[key] = conflict_attempts.get(key, 0) + 1
        if attempt <= int(self.request.form["failures"]):
            raise ConflictError(f"conflict on purpose, attempt {attempt} at {key}")
        tree = IAnnotations(self.context)[RUNS_KEY]
        tree[key] = tree.get(key, 0) + 1
        return "counted"
