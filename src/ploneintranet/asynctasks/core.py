"""The engine: :class:`AbstractPost` prepares a job in Plone, :func:`dispatch`
sends it from Celery.

Build your own jobs on these two; neither imports
:mod:`ploneintranet.asynctasks.celerytasks`, so they can serve any Celery app.
"""

from AccessControl import getSecurityManager
from http.cookiejar import DefaultCookiePolicy
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks.interfaces import IAsyncTask
from plone.protect.authenticator import createToken
from urllib.parse import urlsplit
from zope.component.hooks import getSite
from zope.globalrequest import getRequest
from zope.interface import implementer

import json
import logging
import os
import requests
import time
import transaction
import uuid


logger = logging.getLogger("ploneintranet.asynctasks")

#: Cookie that carries a Plone login (plone.session / PlonePAS).
AUTH_COOKIE = "__ac"
#: Header with the Celery task name, for routing by HAProxy or Nginx.
TASK_NAME_HEADER = "X-celery-task-name"
#: Header naming the user a job runs as; for logs only, never trusted.
USER_HEADER = "X-Async-User"
#: Form field that plone.protect checks.
AUTHENTICATOR_FIELD = "_authenticator"

# Answers that may succeed on a later try.
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})
# Markers of Plone's login form and "Insufficient Privileges" page.
AUTHORIZATION_MARKERS = (
    "insufficient_privileges",
    "insufficient-privileges",
    "require_login",
    "/login",
    "credentials_cookie_auth",
    'id="login-form"',
    "template-login",
)


class AsyncTaskError(Exception):
    """A job cannot be prepared: the message says what to change."""


class DispatchError(AsyncTaskError):
    """Sending a job failed in a way that may pass; the Celery task retries."""


class JobRefused(AsyncTaskError):
    """Plone refused the job (4xx); retrying would not help."""


class AuthorizationError(JobRefused):
    """Plone did not accept the job's user: login form, 401/403 or
    "Insufficient Privileges". Not retried."""


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
    authorization = getattr(request, "_auth", None) or request.getHeader(
        "Authorization"
    )
    if authorization:
        headers["Authorization"] = authorization
    return cookies, headers


def portal_origin(context):
    """Return ``scheme://host[:port]`` of the site that holds ``context``."""
    site = getSite()
    return _origin((site if site is not None else context).absolute_url())


def _origin(url):
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def masked_url(url):
    """``url`` with its password, if any, replaced by ``***``, for messages."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def resolve_url(context, url):
    """Turn the url of a job into an absolute url.

    ``None`` is the context's url; ``x`` and ``/x`` are relative to the
    context's url; an absolute url is kept, but must be on the portal's
    origin, because the job carries the user's credentials.
    """
    base = context.absolute_url()
    if not url:
        return base
    parts = urlsplit(url)
    if not parts.scheme and not parts.netloc:
        return base.rstrip("/") + "/" + url.lstrip("/")
    if parts.scheme not in ("http", "https") or parts.username or parts.password:
        raise AsyncTaskError(
            f"url {url!r} is not an http(s) url of this site; give a url "
            "relative to the context, such as '@@my-view'"
        )
    allowed = portal_origin(context)
    if _origin(url) != allowed:
        raise AsyncTaskError(
            f"url {url!r} is not on the portal's origin {allowed}; jobs carry "
            "the user's credentials, so they only go to this site. Give a url "
            "relative to the context instead"
        )
    return url


def ensure_json(name, value):
    """Raise :class:`AsyncTaskError` naming the first part of ``value`` that
    JSON cannot carry to the worker."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise AsyncTaskError(
                        f"{name} key {key!r} is a {type(key).__name__}; "
                        "job keys must be strings"
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
                "there is no request to take the user's credentials from; "
                "pass the request: Post(context, request)"
            )
        self.cookies, self.headers = capture_credentials(self.request)
        self.userid = _current_userid()
        if self.userid is not None and not (self.cookies or self.headers):
            raise AsyncTaskError(
                f"user {self.userid} is logged in, but neither the {AUTH_COOKIE} "
                "cookie nor an Authorization header is in the request, so a "
                "job could not act as them; log in through Plone's login form "
                "or with HTTP Basic / Bearer authentication"
            )
        self.headers[TASK_NAME_HEADER] = self.task.name
        self.headers[USER_HEADER] = self.userid or "Anonymous User"
        self.data = {AUTHENTICATOR_FIELD: createToken()}

    def __call__(self, url=None, data=None, headers=None, cookies=None, **options):
        """Enqueue the job; see :meth:`IAsyncTask.__call__`."""
        immediate = options.pop("immediate", False)
        url = resolve_url(self.context, url or self.url)
        job_data = dict(self.data, **(data or {}))
        job_headers = dict(self.headers, **(headers or {}))
        job_cookies = dict(self.cookies, **(cookies or {}))
        args = (url, job_data, job_headers, job_cookies)
        for name, value in zip(("url", "data", "headers", "cookies"), args):
            ensure_json(name, value)
        if immediate:
            return self.task.apply_async(args, **options)
        return _pending_jobs().add(self.task, args, options, self.userid)


def _current_userid():
    user = getSecurityManager().getUser()
    if user is None or user.getUserName() == "Anonymous User":
        return None
    return user.getId() or user.getUserName()


class _PendingJobs:
    """The jobs of one transaction, sent when it commits.

    Identical jobs (same task, url and data) are sent once.
    """

    def __init__(self):
        self.jobs = {}

    def add(self, task, args, options, userid):
        url, data, _, _ = args
        fingerprint = json.dumps(
            [
                task.name,
                url,
                {k: v for k, v in data.items() if k != AUTHENTICATOR_FIELD},
            ],
            sort_keys=True,
        )
        if fingerprint not in self.jobs:
            options.setdefault("task_id", str(uuid.uuid4()))
            self.jobs[fingerprint] = (task, args, options, userid)
        task, _, options, _ = self.jobs[fingerprint]
        return task.AsyncResult(options["task_id"])

    def send(self, committed):
        if not committed:
            logger.info("transaction aborted: %d job(s) not sent", len(self.jobs))
            return
        for task, args, options, userid in self.jobs.values():
            try:
                task.apply_async(args, **options)
            except Exception:
                logger.exception(
                    "could not send job %s for %s as %s to the broker %s",
                    task.name,
                    args[0],
                    userid,
                    masked_url(task.app.conf.broker_url),
                )


def _pending_jobs():
    txn = transaction.get()
    pending = getattr(txn, "_ploneintranet_asynctasks", None)
    if pending is None:
        pending = _PendingJobs()
        txn._ploneintranet_asynctasks = pending
        txn.addAfterCommitHook(pending.send)
    return pending


# --- the Celery side ---------------------------------------------------------


class _NoCookies(DefaultCookiePolicy):
    """Keep no cookie a response sets: jobs of different users share a session."""

    def set_ok(self, cookie, request):
        return False


_session = None
_session_pid = None


def http_session():
    """Return this process's pooled :class:`requests.Session`."""
    global _session, _session_pid
    if _session is None or _session_pid != os.getpid():
        session = requests.Session()
        # No proxies or .netrc from the environment: credentials go only to Plone.
        session.trust_env = False
        session.cookies.set_policy(_NoCookies())
        _session, _session_pid = session, os.getpid()
    return _session


def _clean(values):
    """Drop CR and LF from header and cookie values (no header injection)."""
    return {
        str(k).replace("\r", "").replace("\n", ""): str(v)
        .replace("\r", "")
        .replace("\n", "")
        for k, v in (values or {}).items()
    }


def dispatch(url, data=None, headers=None, cookies=None):
    """POST a job to Plone and return the :class:`requests.Response`.

    :raises DispatchError: the job may succeed later (no connection, timeout,
        5xx, 408/409/425/429); Celery tasks retry it.
    :raises AuthorizationError: Plone did not accept the user (401, 403, a
        redirect to or a page of the login form, "Insufficient Privileges").
    :raises JobRefused: any other 4xx answer.

    Redirects are not followed. Credential values are never logged.
    """
    headers = _clean(headers)
    user = headers.get(USER_HEADER, "unknown user")
    started = time.monotonic()
    try:
        response = http_session().post(
            url,
            data=data or {},
            headers=headers,
            cookies=_clean(cookies),
            timeout=(celeryconfig.ASYNC_CONNECT_TIMEOUT, celeryconfig.ASYNC_READ_TIMEOUT),
            allow_redirects=False,
        )
    except requests.RequestException as error:
        raise DispatchError(
            f"POST {url} as {user} failed: {type(error).__name__}: {error}"
        ) from None
    elapsed = (time.monotonic() - started) * 1000
    status = response.status_code
    where = f"POST {url} as {user} -> {status} in {elapsed:.0f} ms"
    if status in (401, 403) or _is_login_page(response):
        raise AuthorizationError(
            f"{where}: Plone did not authorise the job's user; check that "
            "they may use this view and that their login has not expired"
        )
    if status >= 500 or status in RETRYABLE_STATUSES:
        raise DispatchError(f"{where}: Plone could not do the job now")
    if status >= 400:
        raise JobRefused(f"{where}: Plone refused the job")
    logger.info(where)
    return response


def _is_login_page(response):
    if response.is_redirect:
        location = response.headers.get("Location", "")
        return any(marker in location for marker in AUTHORIZATION_MARKERS)
    content_type = response.headers.get("Content-Type", "")
    if "html" not in content_type:
        return False
    body = response.text[:65536]
    return 'id="login-form"' in body or "template-insufficient_privileges" in body
