"""The engine, Plone's side: :class:`AbstractPost` prepares a job in a
user's request and queues it for the end of the transaction.

Build your own jobs on it. It does not import
:mod:`ploneintranet.asynctasks.celerytasks`, so it can serve any Celery app;
the worker's side, :func:`~ploneintranet.asynctasks.worker.dispatch`, is also
importable from here, as in ploneintranet.async.
"""

from Acquisition import aq_base
from datetime import datetime
from datetime import timezone
import json
import logging
from plone.keyring.interfaces import IKeyManager
from plone.protect.authenticator import createToken
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks import jobtoken
from ploneintranet.asynctasks.broker import key_store
from ploneintranet.asynctasks.broker import longest_delay
from ploneintranet.asynctasks.delivery import delivery_for
from ploneintranet.asynctasks.errors import AsyncTaskError
from ploneintranet.asynctasks.errors import AuthorizationError  # noqa: F401
from ploneintranet.asynctasks.errors import DispatchError  # noqa: F401
from ploneintranet.asynctasks.errors import JobRefused  # noqa: F401
from ploneintranet.asynctasks.interfaces import IAsyncTask
from ploneintranet.asynctasks.jobqueue import jobs_of_transaction
from ploneintranet.asynctasks.pas import current_userid
from ploneintranet.asynctasks.urls import resolve_url
from ploneintranet.asynctasks.wire import AUTH_COOKIE
from ploneintranet.asynctasks.wire import AUTHENTICATOR_FIELD
from ploneintranet.asynctasks.wire import TASK_NAME_HEADER
from ploneintranet.asynctasks.wire import TOKEN_HEADER
from ploneintranet.asynctasks.wire import USER_HEADER
from ploneintranet.asynctasks.wire import Job
from ploneintranet.asynctasks.wire import check_target
from ploneintranet.asynctasks.wire import header_problem
from ploneintranet.asynctasks.worker import dispatch  # noqa: F401 (ported code's import)
import time
from urllib.parse import quote
from zope.component import getUtility
from zope.component.hooks import getSite
from zope.globalrequest import getRequest
from zope.interface import implementer


logger = logging.getLogger("ploneintranet.asynctasks")


def capture_credentials(request):
    """Return ``(cookies, headers)`` with the user's Plone credentials.

    Only what Plone needs to recognise the user is taken: the ``__ac`` cookie
    and the ``Authorization`` header (HTTP Basic or a Bearer token from
    plone.restapi / Volto). Other cookies, analytics included, stay behind.
    """
    cookies = {}
    headers = {}
    ac = request.cookies.get(AUTH_COOKIE)
    if ac:
        cookies[AUTH_COOKIE] = ac
    # Zope moves the Authorization header out of the environ into _auth.
    authorization = getattr(request, "_auth", None) or request.getHeader("Authorization")
    if authorization:
        headers["Authorization"] = authorization
    return cookies, headers


def ensure_json(name, value):
    """Raise :class:`AsyncTaskError` naming the first part of ``value`` that
    JSON cannot carry to the worker."""
    try:
        json.dumps(value)
    except RecursionError:
        raise AsyncTaskError(
            f"{name} is nested too deeply to be sent as JSON; pass flat data, or "
            "a reference (a UID or path) and let the worker view load the data"
        ) from None
    except ValueError as error:  # json.dumps: "Circular reference detected"
        raise AsyncTaskError(
            f"{name} contains itself ({error}), which JSON cannot carry; pass plain strings, numbers, lists or dicts"
        ) from None
    except TypeError:
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise AsyncTaskError(
                        f"{name} key {key!r} is a {type(key).__name__}; job keys must be strings"
                    ) from None
                ensure_json(f"{name}[{key!r}]", item)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                ensure_json(f"{name}[{index}]", item)
        raise AsyncTaskError(
            f"{name} is a {type(value).__name__}, which cannot be sent to "
            "Celery as JSON; pass strings, numbers, lists or dicts (for "
            "content, pass its UID or path)"
        ) from None


@implementer(IAsyncTask)
class AbstractPost:
    """Generic task preprocessor; subclass it and set ``task`` and ``url``.

    ::

        @implementer(IAsyncTask)
        class ReindexObject(AbstractPost):
            task = celerytasks.reindex_object
            url = "/@@reindex_object"

    See :class:`ploneintranet.asynctasks.interfaces.IAsyncTask` for the
    contract of every attribute and method.
    """

    task = None
    url = None
    #: Seconds to wait for more of the same job before running it once; for
    #: bursts such as autosave. ``None`` runs every job. Needs a Redis: the
    #: broker, or with RabbitMQ the result backend.
    debounce = None

    def __init__(self, context, request=None):
        """Capture the user's credentials and a CSRF token for them."""
        if self.task is None:
            raise AsyncTaskError(
                f"{type(self).__name__} has no task; set the class attribute "
                "task to a Celery task such as celerytasks.post"
            )
        self.context = context
        self.request = request if request is not None else getRequest()
        if self.request is None:
            raise AsyncTaskError(
                "there is no request to take the user's credentials from; pass the request: Post(context, request)"
            )
        self.userid = current_userid()
        if celeryconfig.ASYNC_CREDENTIALS == "forward":
            self.cookies, self.headers = capture_credentials(self.request)
            if self.userid is not None and not (self.cookies or self.headers):
                raise AsyncTaskError(
                    f"user {self.userid} is logged in, but neither the {AUTH_COOKIE} "
                    "cookie nor an Authorization header is in the request, so a "
                    "job could not act as them; log in through Plone's login form "
                    "or with HTTP Basic / Bearer authentication"
                )
        else:  # a job token, signed per job in __call__
            self.cookies, self.headers = {}, {}
            if self.userid is not None:
                _check_token_plugin(self.userid)
        self.headers[TASK_NAME_HEADER] = self.task.name
        # Quoted: a header value is Latin-1, a user id may be any text.
        self.headers[USER_HEADER] = quote(self.userid or "Anonymous User", safe=" @.+-_")
        self.data = {AUTHENTICATOR_FIELD: createToken()}

    def __call__(self, url=None, data=None, headers=None, cookies=None, **options):
        """Enqueue the job; see :meth:`IAsyncTask.__call__`."""
        immediate = options.pop("immediate", False)
        delay = _check_delay(options, self.task.app)
        url = self.transform_url(url)
        if type(self).transform_url is not AbstractPost.transform_url:
            check_target(url, self._own_port())  # an override may return any url
        job_data = dict(self.data, **(data or {}))
        job_headers = dict(self.headers, **(headers or {}))
        if self.userid is not None and celeryconfig.ASYNC_CREDENTIALS == "token":
            expires = time.time() + delay + celeryconfig.ASYNC_TOKEN_LIFETIME
            secret = getUtility(IKeyManager).secret(jobtoken.RING)
            job_headers[TOKEN_HEADER] = jobtoken.sign(secret, self.userid, url, expires)
        job_cookies = dict(self.cookies, **(cookies or {}))
        args = (url, job_data, job_headers, job_cookies)
        try:
            size = len(json.dumps(args))
        except (TypeError, ValueError, RecursionError):
            for name, value in zip(("url", "data", "headers", "cookies"), args, strict=True):
                ensure_json(name, value)
            raise
        problem = header_problem(job_headers, job_cookies)
        if problem:
            raise AsyncTaskError(f"{problem}; pass such values to the job in data instead")
        if size > celeryconfig.ASYNC_MAX_JOB_BYTES:
            raise AsyncTaskError(
                f"the job is {size} bytes of JSON, more than ASYNC_MAX_JOB_BYTES="
                f"{celeryconfig.ASYNC_MAX_JOB_BYTES}; pass a reference (a UID or "
                "path) and let the worker view load the data"
            )
        if self.debounce:
            key_store(self.task.app, needed_for="debounce")  # say so now
        job = Job.create(self.task, args, options, self.userid, self.debounce)
        if immediate:
            return delivery_for(self.task.app).publish([job])[0]
        return jobs_of_transaction().add(job)

    def transform_url(self, url):
        """The absolute url the job is POSTed to, from ``url`` or
        :attr:`url` (see :func:`~ploneintranet.asynctasks.urls.resolve_url`).

        Upstream's hook for url munging: a subclass may override it; what it
        returns must still be a url jobs may be sent to (an allowed origin),
        or :meth:`__call__` raises :class:`AsyncTaskError`.
        """
        return resolve_url(self.context, url or self.url, self._own_port())

    def _own_port(self):
        return getattr(self.request, "environ", {}).get("SERVER_PORT")


def _check_token_plugin(userid):
    site = getSite()
    if getattr(aq_base(getattr(site, "acl_users", None)), jobtoken.PLUGIN_ID, None) is None:
        raise AsyncTaskError(
            f"the job token plugin ({jobtoken.PLUGIN_ID}) is not in this site's "
            f"acl_users, so a job could not act as {userid}: run the upgrade "
            "steps of ploneintranet.asynctasks in Site Setup > Add-ons (or set "
            "ASYNC_CREDENTIALS=forward to send the user's own login, as "
            "ploneintranet.async did)"
        )


def _check_delay(options, app):
    """Refuse a delay the broker of ``app`` would answer with a second
    delivery (:func:`~ploneintranet.asynctasks.broker.longest_delay`);
    return the delay in seconds."""
    longest, why = longest_delay(app)
    delay = options.get("countdown") or 0
    eta = options.get("eta")
    if eta is not None:
        if eta.tzinfo is None:
            eta = eta.replace(tzinfo=timezone.utc)
        delay = max(delay, (eta - datetime.now(timezone.utc)).total_seconds())
    if delay >= longest:
        raise AsyncTaskError(f"a job delayed by {delay:.0f} s would be delivered twice: {why}")
    return delay
