"""The documented contracts of ploneintranet.asynctasks."""

from zope.interface import Attribute
from zope.interface import Interface
from zope.publisher.interfaces.browser import IDefaultBrowserLayer


class IPloneintranetAsyncLayer(IDefaultBrowserLayer):
    """Browser layer: the worker views exist only where the add-on is installed."""


class IAsyncTask(Interface):
    """A task preprocessor: prepares, in Plone, a job that Celery will run.

    An implementation (usually a subclass of
    :class:`ploneintranet.asynctasks.core.AbstractPost`) is created inside a
    Plone request and called to enqueue the job::

        tasks.ReindexObject(self.context, self.request)()

    The job later reaches Plone again as an HTTP POST to ``url``, sent by a
    Celery worker with the same user's credentials and a plone.protect
    authenticator, so it is executed by an ordinary, permission-checked view.
    """

    task = Attribute(
        "The Celery task that sends the job, for example "
        "``celerytasks.post``. It is called as "
        "``task.apply_async((url, data, headers, cookies), **options)``."
    )

    url = Attribute(
        "Default url of the worker view, relative to the context "
        "(``'/@@reindex_object'`` and ``'@@reindex_object'`` are the same). "
        "``None`` means the context's own url."
    )

    context = Attribute("The content object the job is about.")

    request = Attribute("The request whose user the job runs as.")

    data = Attribute(
        "Form data posted to the worker view (a dict). It already holds the "
        "``_authenticator`` token that plone.protect checks."
    )

    headers = Attribute(
        "HTTP headers of the job (a dict): ``X-celery-task-name`` for routing "
        "by a proxy and ``X-Async-User`` for logs. When the job is enqueued "
        "it gets the user's job token (``X-Async-Token``, see "
        ":mod:`ploneintranet.asynctasks.jobtoken`); with "
        "``ASYNC_CREDENTIALS=forward``, the user's ``Authorization`` header "
        "instead, if they had one."
    )

    cookies = Attribute(
        "Cookies of the job (a dict): empty with job tokens; with "
        "``ASYNC_CREDENTIALS=forward`` only Plone's auth cookie ``__ac``, "
        "never the rest of the user's cookie jar."
    )

    def __init__(context, request=None):
        """Capture everything the job needs from Plone.

        :param context: the content object; relative urls are resolved
            against its url.
        :param request: the current request; defaults to the global request.
        :raises ploneintranet.asynctasks.core.AsyncTaskError: when the job
            could not act as the logged-in user: the job token plugin is not
            installed (run the upgrade steps), or, with
            ``ASYNC_CREDENTIALS=forward``, their credentials are not in the
            request.
        """

    def __call__(url=None, data=None, headers=None, cookies=None, **options):
        """Enqueue the job and return Celery's ``AsyncResult``.

        :param url: the worker view; ``None`` uses :attr:`url`, a relative url
            (``x`` or ``/x``) is appended to the context's url, an absolute
            url must point at this portal.
        :param data: extra form data, merged over :attr:`data`.
        :param headers: extra headers, merged over :attr:`headers`.
        :param cookies: extra cookies, merged over :attr:`cookies`.
        :param options: passed to Celery's ``apply_async``: ``countdown``,
            ``eta``, ``expires``, ``queue``, ... One more option is ours:
            ``immediate=True`` sends the job at once instead of after the
            current transaction commits.
        :raises ploneintranet.asynctasks.core.AsyncTaskError: when an argument
            cannot be serialised to JSON, the url is not on this portal, or the
            portal's url (as the request names it) is not an allowed origin
            (``ASYNC_ALLOWED_ORIGINS``, or this machine on Plone's own port).

        By default the job is sent only when the current Zope transaction
        commits, so the worker always sees the data the user saved, and a
        transaction that aborts sends nothing. The task id is assigned at
        once, so the returned result can be kept and looked up later.
        """
