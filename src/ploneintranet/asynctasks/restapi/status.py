"""``GET @async-status``: the checks of ``@@async-status`` for REST clients."""

from plone.restapi.services import Service
from ploneintranet.asynctasks.browser.status import AsyncStatusView


class AsyncStatusGet(Service):
    """Answer the JSON of ``@@async-status?format=json``: ``{"ok",
    "round_trips", "authenticator", "checks": [{"name", "status",
    "message"}]}``, with HTTP 200 when every check that ran is OK and 503
    otherwise.

    A GET sends no job, so the two round trips are ``NOT RUN``; to run them,
    POST ``format=json`` and the ``authenticator`` of this answer (as
    ``_authenticator``) to ``@@async-status`` with the same credentials.
    """

    def reply(self):
        report = AsyncStatusView(self.context, self.request).report(round_trips=False)
        response = self.request.response
        response.setHeader("Cache-Control", "no-store")
        response.setStatus(200 if report["ok"] else 503)
        return report
