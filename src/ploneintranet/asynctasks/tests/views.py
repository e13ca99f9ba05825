"""Views used only by the tests: a job trigger and a job that leaves a trace."""

from ploneintranet.asynctasks import tasks
from ploneintranet.asynctasks.browser.views import ProtectedJobView
from Products.Five.browser import BrowserView
from zope.annotation.interfaces import IAnnotations

from persistent.list import PersistentList


NOTES_KEY = "ploneintranet.asynctasks.tests.notes"
TASK_NAME_KEY = "ploneintranet.asynctasks.tests.task-name"


def notes(context):
    """The notes that ``@@test-record-job`` wrote on ``context``."""
    return list(IAnnotations(context).get(NOTES_KEY, []))


def received_task_name(context):
    """The ``X-celery-task-name`` header of the last recorded job."""
    return IAnnotations(context).get(TASK_NAME_KEY)


class EnqueueView(BrowserView):
    """``@@test-enqueue``: enqueue a job as the requesting user; return its id.

    ``?job=reindex`` enqueues ReindexObject; ``?job=post&note=x`` enqueues a
    Post to ``@@test-record-job``.
    """

    def __call__(self):
        form = self.request.form
        if form.get("job") == "reindex":
            result = tasks.ReindexObject(self.context, self.request)()
        else:
            result = tasks.Post(self.context, self.request)(
                url=form.get("url", "@@test-record-job"),
                data={"note": form.get("note", "")},
            )
        return result.id


class RecordJobView(ProtectedJobView):
    """``@@test-record-job``: append the posted ``note`` to the context."""

    def run(self):
        annotations = IAnnotations(self.context)
        if NOTES_KEY not in annotations:
            annotations[NOTES_KEY] = PersistentList()
        annotations[NOTES_KEY].append(self.request.form.get("note", ""))
        annotations[TASK_NAME_KEY] = self.request.getHeader("X-celery-task-name")
        return "recorded"
