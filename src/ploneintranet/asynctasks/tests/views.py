"""Views used only by the tests: a job trigger and a job that leaves a trace."""

from persistent.list import PersistentList
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks import tasks
from ploneintranet.asynctasks.browser.views import ProtectedJobView
from ploneintranet.asynctasks.core import AbstractPost
from Products.Five.browser import BrowserView
import time
from zope.annotation.interfaces import IAnnotations


NOTES_KEY = "ploneintranet.asynctasks.tests.notes"
TASK_NAME_KEY = "ploneintranet.asynctasks.tests.task-name"


def notes(context):
    """The notes that ``@@test-record-job`` wrote on ``context``."""
    return list(IAnnotations(context).get(NOTES_KEY, []))


def received_task_name(context):
    """The ``X-celery-task-name`` header of the last recorded job."""
    return IAnnotations(context).get(TASK_NAME_KEY)


class DebouncedRecord(AbstractPost):
    """A job to ``@@test-record-job`` that runs once after a burst."""

    task = celerytasks.post
    url = "@@test-record-job"
    debounce = 1.0


class EnqueueView(BrowserView):
    """``@@test-enqueue``: enqueue a job as the requesting user; return its id.

    ``?job=reindex`` enqueues ReindexObject; ``?job=post&note=x`` enqueues a
    Post to ``@@test-record-job``, ``?job=debounced&note=x`` a DebouncedRecord.
    ``times=n`` enqueues the same job n times; ``fail=1`` raises afterwards,
    so the transaction aborts.
    """

    def __call__(self):
        form = self.request.form
        for _ in range(int(form.get("times", 1))):
            result = self.enqueue(form.get("job"), form.get("note", ""))
        if form.get("fail"):
            raise RuntimeError("failing on purpose after enqueueing")
        return result.id

    def enqueue(self, job, note):
        if job == "reindex":
            return tasks.ReindexObject(self.context, self.request)()
        if job == "debounced":
            return DebouncedRecord(self.context, self.request)(data={"note": note})
        return tasks.Post(self.context, self.request)(
            url=self.request.form.get("url", "@@test-record-job"),
            data={"note": note},
        )


class EditAndReindexView(ProtectedJobView):
    """``@@test-edit-and-reindex``: set the title without reindexing, enqueue
    ReindexObject, then keep the transaction open ``delay`` seconds."""

    def run(self):
        self.context.title = self.request.form["title"]
        tasks.ReindexObject(self.context, self.request)()
        time.sleep(float(self.request.form.get("delay", 0)))
        return "edited"


class RecordJobView(ProtectedJobView):
    """``@@test-record-job``: append the posted ``note`` to the context."""

    def run(self):
        annotations = IAnnotations(self.context)
        if NOTES_KEY not in annotations:
            annotations[NOTES_KEY] = PersistentList()
        annotations[NOTES_KEY].append(self.request.form.get("note", ""))
        annotations[TASK_NAME_KEY] = self.request.getHeader("X-celery-task-name")
        return "recorded"
