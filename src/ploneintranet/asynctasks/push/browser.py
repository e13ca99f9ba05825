"""The Plone end of websocket push: who opened a socket, and what a page
needs to open one.

``pat-push.js`` itself is loaded by Plone's resource registry: the bundle
``ploneintranet-asynctasks-push`` (``profiles/default/registry/push.xml``)."""

from html import escape
from plone import api
from plone.app.layout.viewlets.common import ViewletBase
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks.pas import current_userid
from Products.Five.browser import BrowserView


#: Where the add-on's browser resources are published.
RESOURCE_PREFIX = "++resource++ploneintranet.asynctasks"
#: The resource registry's bundle that loads ``pat-push.js``.
BUNDLE = "ploneintranet-asynctasks-push"
BUNDLE_RECORD = f"plone.bundles/{BUNDLE}.jscompilation"


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


class PushConfigViewlet(ViewletBase):
    """Tells ``pat-push.js``, on the pages of logged-in users, where the push
    server is (``ASYNC_PUSH_PUBLIC_URL``, or the page's host on
    ``ASYNC_PUSH_PORT``): ``<meta name="ploneintranet-push">``.

    A site that lacks the bundle's record (installed before it, and its
    profile's registry step not run again) gets the script from here too."""

    def render(self):
        if current_userid() is None:
            return ""
        meta = (
            f'<meta name="ploneintranet-push" '
            f'data-push-url="{escape(celeryconfig.ASYNC_PUSH_PUBLIC_URL)}" '
            f'data-push-port="{celeryconfig.ASYNC_PUSH_PORT}" />'
        )
        if api.portal.get_registry_record(BUNDLE_RECORD, default=None):
            return meta
        portal_url = api.portal.get().absolute_url()
        return f'{meta}<script src="{escape(portal_url)}/{RESOURCE_PREFIX}/pat-push.js" defer></script>'
