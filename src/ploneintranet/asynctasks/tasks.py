"""Step 1: task preprocessors, created in a Plone request to enqueue a job.

::

    from ploneintranet.asynctasks import tasks
    tasks.ReindexObject(self.context, self.request)()
"""

from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks.core import AbstractPost
from ploneintranet.asynctasks.interfaces import IAsyncTask
from zope.interface import implementer


@implementer(IAsyncTask)
class Post(AbstractPost):
    """POST to any view of the context: give the url when calling.

    ``Post(context, request)(url="@@my-view", data={...})``
    """

    task = celerytasks.post


@implementer(IAsyncTask)
class ReindexObject(AbstractPost):
    """Reindex the context in the catalog.

    Pass ``data={"attributes": ["Title", ...]}`` to update only those indexes.
    """

    task = celerytasks.reindex_object
    url = "/@@reindex_object"
