"""The Plone end of websocket push: who opened a socket, and the script."""

from html import escape
from plone import api
from plone.app.layout.viewlets.common import ViewletBase
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks.pas import current_userid
from Products.Five.browser import BrowserView


#: Where the add-on's browser resources are published.
RESOURCE_PREFIX = "++resource++ploneintranet.asynctasks"


class PushUserView(BrowserView):
    """``@@async-push-user``: the id of the user the request's credentials
    belong to, as plain text; 403 for anonymous. The push server asks it
    before it accepts a socket."""

    def __call__(self):
        response = self.request.response
        response.setHeader("Content-Type", "text/plain; charset=utf-8")
        response.setHeader("Cache-Control", "no-store")
        userid = current_userid()
        if userid is None:
            response.setStatus(403)
            return "not logged in"
        return userid


class PushScriptViewlet(ViewletBase):
    """Loads ``pat-push.js`` on the pages of logged-in users, telling it
    where the push server is (``ASYNC_PUSH_PUBLIC_URL`` or the page's host
    on ``ASYNC_PUSH_PORT``)."""

    def render(self):
        if current_userid() is None:
            return ""
        portal_url = api.portal.get().absolute_url()
        return (
            f'<script src="{escape(portal_url)}/{RESOURCE_PREFIX}/pat-push.js" defer '
            f'data-push-url="{escape(celeryconfig.ASYNC_PUSH_PUBLIC_URL)}" '
            f'data-push-port="{celeryconfig.ASYNC_PUSH_PORT}"></script>'
        )
