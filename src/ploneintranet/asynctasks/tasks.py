"""Step 1: task preprocessors, created in a Plone request to enqueue a job.

::

    from ploneintranet.asynctasks import tasks
    tasks.ReindexObject(self.context, self.request)()
"""

from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks import previews
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


@implementer(IAsyncTask)
class GeneratePreview(AbstractPost):
    """Make the preview of an Image or File; its user's page gets it by push.

    Debounced: a burst of uploads to the same item makes one preview.
    """

    task = celerytasks.generate_preview
    url = "/@@async-generate-preview"
    debounce = 2

    def __init__(self, context, request=None):
        super().__init__(context, request)
        self.data.update(previews.push_fields(context))
