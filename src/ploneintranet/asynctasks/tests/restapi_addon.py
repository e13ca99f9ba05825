"""The test add-on of test_restapi (``restapi.zcml``): saving a Document
queues a ReindexObject, as an add-on that defers costly indexing would, and
every job request that reaches Plone is recorded with the user it runs as."""

from AccessControl import getSecurityManager
from plone.app.contenttypes.interfaces import IDocument
from ploneintranet.asynctasks import tasks
from ploneintranet.asynctasks.wire import TASK_NAME_HEADER
from zope.component import adapter
from zope.globalrequest import getRequest
from zope.lifecycleevent.interfaces import IObjectModifiedEvent
from ZPublisher.interfaces import IPubAfterTraversal


#: ``{"url", "task", "user", "title"}`` of each job request Plone traversed,
#: in the order they came (the WSGI server runs in the test's process).
JOB_REQUESTS = []
#: The ids of the ReindexObject jobs that saves queued.
QUEUED = []


@adapter(IDocument, IObjectModifiedEvent)
def reindex_later(document, event):
    """Queue a ReindexObject of the saved Document for the saving user."""
    QUEUED.append(tasks.ReindexObject(document, getRequest())().id)


@adapter(IPubAfterTraversal)
def record_job_request(event):
    """Record a job request: its url, task, user and its context's title."""
    request = event.request
    task = request.getHeader(TASK_NAME_HEADER)
    if not task:
        return
    context = getattr(request.get("PUBLISHED"), "context", None)
    JOB_REQUESTS.append(
        {
            "url": request.getURL(),
            "task": task,
            "user": getSecurityManager().getUser().getId(),
            "title": getattr(context, "title", None),
        }
    )
