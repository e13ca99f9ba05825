"""Step 1 of the add-on: its preprocessor, a task and a url."""

from ploneintranet.asynctasks.core import AbstractPost
from ploneintranet.asynctasks.interfaces import IAsyncTask
from ploneintranet.asynctasks.tests.upstream_addon import celerytasks
from zope.interface import implementer


@implementer(IAsyncTask)
class WriteNote(AbstractPost):
    """Write a note asynchronously."""

    task = celerytasks.write_note
    url = "/@@write-note"
