"""Step 3 of the add-on: its worker view in upstream's style (``__call__``
overridden, ``authenticated()``, ``template``), and a view that queues it."""

from ploneintranet.asynctasks.browser.views import AbstractAsyncView
from ploneintranet.asynctasks.tests.upstream_addon import tasks
from Products.Five.browser import BrowserView
from zope.annotation.interfaces import IAnnotations


NOTE_KEY = "ploneintranet.asynctasks.tests.upstream_addon.note"


class WriteNoteView(AbstractAsyncView):
    """Store the posted note on the context."""

    ADDITIONAL_PARAMETERS = [{"name": "note", "type": "text"}]

    def __call__(self):
        if self.authenticated():
            IAnnotations(self.context)[NOTE_KEY] = self.request.get("note")
        return self.template()


class QueueNoteView(BrowserView):
    """Queue a WriteNote job, as the add-on's own code would."""

    def __call__(self):
        result = tasks.WriteNote(self.context, self.request)(data={"note": self.request.get("note")})
        return result.id
