"""Site Setup > Async tasks: the settings a site administrator owns.

The form edits two registry records of the add-on's profile,
``ploneintranet.asynctasks.portal_url_replacement_mapping`` and
``ploneintranet.asynctasks.previews_enabled``. Beside it, read-only, the
settings of the environment (shared by Plone and the worker, so not
editable here): the broker, whether a worker answers, the queues and where
jobs may go. Volto edits the same records through ``@controlpanels``
(:mod:`ploneintranet.asynctasks.restapi`).
"""

from plone.app.registry.browser.controlpanel import ControlPanelFormWrapper
from plone.app.registry.browser.controlpanel import RegistryEditForm
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks.browser.status import FAIL
from ploneintranet.asynctasks.browser.status import STATUS_LABELS
from ploneintranet.asynctasks.browser.status import AsyncStatusView
from ploneintranet.asynctasks.errors import JobRefused
from ploneintranet.asynctasks.i18n import _
from ploneintranet.asynctasks.i18n import translated
from ploneintranet.asynctasks.previews.settings import RECORD_PREFIX
from ploneintranet.asynctasks.previews.settings import IPreviewSettings
from ploneintranet.asynctasks.wire import allowed_description
from ploneintranet.asynctasks.wire import check_http_url
from ploneintranet.asynctasks.wire import is_allowed
from ploneintranet.asynctasks.wire import masked_url
from ploneintranet.asynctasks.wire import origin
from Products.Five.browser.pagetemplatefile import ViewPageTemplateFile
from zope import schema
from zope.globalrequest import getRequest
from zope.interface import Invalid


#: The configlet's id in ``portal_controlpanel`` (profiles/default/controlpanel.xml).
CONFIGLET_ID = "ploneintranet.asynctasks"


def own_port(request):
    """The port this Plone serves ``request`` on, as the job preprocessors see it."""
    return getattr(request, "environ", {}).get("SERVER_PORT")


def check_mapping(mapping):
    """Constraint of the mapping: every public url a plain http(s) url, and
    every internal url one that jobs may be sent to. Otherwise every job of
    the site would be refused when it is queued.

    The error is already in the request's language: the form and
    plone.restapi's ``@controlpanels`` show the text of an ``Invalid`` as it is.

    :raises zope.interface.Invalid: naming the url and what to do instead.
    """
    port = own_port(getRequest())
    for public, internal in (mapping or {}).items():
        for url in (public, internal):
            try:
                check_http_url(url)
            except JobRefused as error:
                raise Invalid(
                    translated(
                        _(
                            "${error}: give a url such as http://127.0.0.1:8080/Plone",
                            mapping={"error": str(error)},
                        )
                    )
                ) from None
        if not is_allowed(internal, port):
            raise Invalid(
                translated(
                    _(
                        "jobs may not be sent to ${origin}: ${allowed}. Give an internal "
                        "address of this Plone, or add that origin to ASYNC_ALLOWED_ORIGINS "
                        "for Plone and the worker",
                        mapping={"origin": origin(internal), "allowed": allowed_description(port)},
                    )
                )
            )
    return True


class IAsyncTasksSettings(IPreviewSettings):
    """The control panel's schema: the records ``ploneintranet.asynctasks.<field>``."""

    portal_url_replacement_mapping = schema.Dict(
        title=_("Portal url replacement mapping"),
        description=_(
            "Maps the public url of this portal to an internal one that jobs "
            "use instead, to bypass the public proxy; for example "
            "https://example.com to http://127.0.0.1:8080/VirtualHostBase/https/"
            "example.com:443/Plone/VirtualHostRoot. Jobs carry the user's "
            "credentials: they go only to the portal's own origin or to the "
            "internal url given here."
        ),
        key_type=schema.TextLine(title=_("Public url")),
        value_type=schema.TextLine(title=_("Internal url")),
        required=False,
        constraint=check_mapping,
    )


class AsyncTasksSettingsForm(RegistryEditForm):
    """The form of the per-site settings."""

    schema = IAsyncTasksSettings
    schema_prefix = RECORD_PREFIX
    label = _("Async tasks")
    description = _(
        "Settings of this site for ploneintranet.asynctasks. The settings "
        "below the form come from the environment of Plone and the Celery "
        "worker; the @@async-status page tests them."
    )


class AsyncTasksControlPanel(ControlPanelFormWrapper):
    """``@@async-tasks-controlpanel``: the form, and the environment read-only."""

    form = AsyncTasksSettingsForm
    index = ViewPageTemplateFile("templates/controlpanel.pt")

    def environment(self):
        """Rows ``{"name", "value", "status", "label"}`` of the settings that
        come from the environment, in the request's language; ``status`` is
        ``OK``, ``WARN``, ``FAIL`` or empty, ``label`` the status as shown.
        The broker and worker rows are the checks of ``@@async-status``."""
        checks = AsyncStatusView(self.context, self.request)
        broker = checks.check_broker()
        if broker["status"] == FAIL:
            worker = {"status": FAIL, "message": _("not asked: the broker is unreachable")}
        else:
            worker = checks.check_worker()
        rows = [
            (_("Broker (BROKER_URL)"), broker["message"], broker["status"]),
            (_("Result backend (CELERY_RESULT_BACKEND)"), masked_url(celerytasks.app.conf.result_backend), ""),
            (_("Celery worker"), worker["message"], worker["status"]),
            (_("Queues (ASYNC_QUEUES)"), ", ".join(celeryconfig.ASYNC_QUEUES), ""),
            (_("Jobs may go to"), allowed_description(own_port(self.request)), ""),
        ]
        return [
            {
                "name": translated(name, self.request),
                "value": translated(value, self.request),
                "status": status,
                "label": translated(STATUS_LABELS[status], self.request) if status else "",
            }
            for name, value, status in rows
        ]
