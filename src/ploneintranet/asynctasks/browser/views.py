"""Step 3: worker views, ordinary browser views that do a job's work.

A job arrives as a POST carrying the user's credentials and a plone.protect
``_authenticator``. Subclass :class:`ProtectedJobView` and implement
:meth:`~ProtectedJobView.run`; register the view with the permission the work
needs. CSRF protection stays on: a POST without an authenticator gets a
confirmation form and changes nothing, a forged one is refused with 403.
"""

import logging
from plone.protect.authenticator import check
from ploneintranet.asynctasks.wire import AUTHENTICATOR_FIELD
from Products.Five.browser import BrowserView
from Products.Five.browser.pagetemplatefile import ViewPageTemplateFile
from zope.annotation.interfaces import IAnnotations


logger = logging.getLogger("ploneintranet.asynctasks")

#: Annotation on the site root where ``@@async-checktask`` keeps its checksum.
CHECKSUM_KEY = "ploneintranet.asynctasks.checksum"


class ProtectedJobView(BrowserView):
    """Base class of worker views: runs :meth:`run` only for a verified POST.

    Without an authenticator (you opened the view in a browser, or called it
    by hand while debugging) it renders a confirmation form that carries a
    fresh authenticator for you and writes nothing.
    """

    confirm = ViewPageTemplateFile("templates/protected.pt")
    #: Extra inputs of the confirmation form, for a job run by hand that
    #: needs them: ``{"name": ..., "type": ...}`` dicts, as upstream's.
    ADDITIONAL_PARAMETERS = ()

    def __call__(self):
        if not self.authenticated():
            return self.confirm()
        result = self.run()
        return "OK" if result is None else result

    def authenticated(self):
        """True for a POST whose authenticator plone.protect verifies; False
        without one (a GET, a form to confirm).

        :raises zExceptions.Forbidden: (403) for a forged or another user's
            authenticator; nothing is written.
        """
        if getattr(self, "_authenticated", None) is None:
            if self.has_authenticator():
                check(self.request)
            self._authenticated = self.has_authenticator()
        return self._authenticated

    def has_authenticator(self):
        """True for a POST that carries a CSRF token to verify."""
        return self.request.method == "POST" and bool(
            self.request.form.get(AUTHENTICATOR_FIELD) or self.request.getHeader("X-CSRF-TOKEN")
        )

    def form_items(self):
        """The submitted form without its token, for the confirmation form."""
        for name, value in sorted(self.request.form.items()):
            if name == AUTHENTICATOR_FIELD:
                continue
            for item in value if isinstance(value, list) else [value]:
                yield {"name": f"{name}:list" if isinstance(value, list) else name, "value": item}

    def run(self):
        """Do the job's work. Return a text for the response, or None."""
        raise NotImplementedError(f"{type(self).__name__} must implement run() with the job's work")


class AbstractAsyncView(ProtectedJobView):
    """The worker view base of upstream's ploneintranet.asynctasks 7.2, for
    views ported unchanged. Such a view overrides ``__call__``::

        class GeneratePdfView(AbstractAsyncView):
            def __call__(self):
                if self.authenticated():
                    make_the_pdf(self.context)
                return self.template()

    :meth:`~ProtectedJobView.authenticated` is stricter than upstream's: only
    a POST with an authenticator that plone.protect verifies (upstream took
    any ``_authenticator``, also in a GET); a forged one is a 403.
    ``template`` is the confirmation form, with an input for each of
    ``ADDITIONAL_PARAMETERS``, and says "Action confirmed and executed." once
    the job ran. New views subclass :class:`ProtectedJobView` and implement
    ``run()`` instead.
    """

    template = ViewPageTemplateFile("templates/protected.pt")
    ADDITIONAL_PARAMETERS = []


class ReindexObjectView(ProtectedJobView):
    """``@@reindex_object``: reindex the context, all indexes or
    only those named in the form field ``attributes``."""

    def run(self):
        attributes = self.request.form.get("attributes") or []
        if isinstance(attributes, str):
            attributes = [attributes]
        self.context.reindexObject(idxs=list(attributes))
        logger.info(
            "reindexed %s (%s)",
            "/".join(self.context.getPhysicalPath()),
            ", ".join(attributes) or "all indexes",
        )
        return "reindexed"


class CheckTaskView(ProtectedJobView):
    """``@@async-checktask``: the end of ``@@async-status``'s HTTP round trip.

    A verified POST stores the form field ``checksum`` on the site root; a
    GET (or an unverified POST) shows the stored checksum in the form.
    """

    def run(self):
        checksum = self.request.form.get("checksum", "")
        IAnnotations(self.context)[CHECKSUM_KEY] = checksum
        return checksum

    def stored_checksum(self):
        """The checksum the last verified POST stored, or ``None``."""
        return IAnnotations(self.context).get(CHECKSUM_KEY)
