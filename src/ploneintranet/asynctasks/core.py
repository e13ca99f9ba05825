"""The engine: :class:`AbstractPost` prepares a job in Plone, :func:`dispatch`
sends it from Celery.

Build your own jobs on these two; neither imports
:mod:`ploneintranet.asynctasks.celerytasks`, so they can serve any Celery app.
"""

from AccessControl import getSecurityManager
from Acquisition import aq_base
from datetime import datetime
from datetime import timezone
from http.cookiejar import DefaultCookiePolicy
import json
import logging
import os
from plone.keyring.interfaces import IKeyManager
from plone.protect.authenticator import createToken
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks import jobtoken
from ploneintranet.asynctasks.broker import redis_client
from ploneintranet.asynctasks.errors import AsyncTaskError  # noqa: F401
from ploneintranet.asynctasks.errors import AuthorizationError
from ploneintranet.asynctasks.errors import DispatchError
from ploneintranet.asynctasks.errors import JobRefused
from ploneintranet.asynctasks.interfaces import IAsyncTask
from ploneintranet.asynctasks.jobqueue import AUTHENTICATOR_FIELD
from ploneintranet.asynctasks.jobqueue import jobs_of_transaction
from ploneintranet.asynctasks.publish import reprs_for_monitors
from ploneintranet.asynctasks.urls import allowed_description
from ploneintranet.asynctasks.urls import check_http_url
from ploneintranet.asynctasks.urls import check_target
from ploneintranet.asynctasks.urls import is_allowed
from ploneintranet.asynctasks.urls import masked_url  # noqa: F401
from ploneintranet.asynctasks.urls import resolve_url
import re
import requests
import time
from urllib.parse import quote
from zope.component import getUtility
from zope.component.hooks import getSite
from zope.globalrequest import getRequest
from zope.interface import implementer


logger = logging.getLogger("ploneintranet.asynctasks")

#: Cookie that carries a Plone login (plone.session / PlonePAS).
AUTH_COOKIE = "__ac"
#: Header with the Celery task name, for routing by HAProxy or Nginx.
TASK_NAME_HEADER = "X-celery-task-name"
#: Header naming the user a job runs as; for logs only, never trusted.
USER_HEADER = "X-Async-User"

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
# A header or cookie name: an HTTP token (RFC 9110), so nothing can end it early.
HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# In a value: a control character (CR/LF would start another header), and in
# a cookie also ";" (another cookie); a regex: this runs for every job.
FORBIDDEN_IN_HEADER = re.compile(r"[\x00-\x1f\x7f]")
FORBIDDEN_IN_COOKIE = re.compile(r"[\x00-\x1f\x7f;]")
NOT_LATIN_1 = re.compile(r"[^\x00-\xff]")


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
            f"{name} contains itself ({error}), which JSON cannot carry; "
            "pass plain strings, numbers, lists or dicts"
        ) from None
    except TypeError:
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
    #: Seconds to wait for more of the same job before running it once; for
    #: bursts such as autosave. ``None`` runs every job. Needs a Redis broker.
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
                "there is no request to take the user's credentials from; "
                "pass the request: Post(context, request)"
            )
        self.userid = _current_userid()
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
        delay = _check_delay(options)
        url = self.transform_url(url)
        if type(self).transform_url is not AbstractPost.transform_url:
            check_target(url, self._own_port())  # an override may return any url
        job_data = dict(self.data, **(data or {}))
        job_headers = dict(self.headers, **(headers or {}))
        if self.userid is not None and celeryconfig.ASYNC_CREDENTIALS == "token":
            expires = time.time() + delay + celeryconfig.ASYNC_TOKEN_LIFETIME
            secret = getUtility(IKeyManager).secret(jobtoken.RING)
            job_headers[jobtoken.TOKEN_HEADER] = jobtoken.sign(secret, self.userid, url, expires)
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
            raise AsyncTaskError(
                f"{problem}; pass such values to the job in data instead"
            )
        if size > celeryconfig.ASYNC_MAX_JOB_BYTES:
            raise AsyncTaskError(
                f"the job is {size} bytes of JSON, more than ASYNC_MAX_JOB_BYTES="
                f"{celeryconfig.ASYNC_MAX_JOB_BYTES}; pass a reference (a UID or "
                "path) and let the worker view load the data"
            )
        if immediate:  # any task: its message shows monitors the url only
            return self.task.apply_async(args, **dict(options, **reprs_for_monitors(args)))
        if self.debounce:
            redis_client(self.task.app, needed_for="debounce")  # say so now
        return jobs_of_transaction().add(
            self.task, args, options, self.userid, self.debounce
        )

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


def _check_delay(options):
    """Refuse a delay Redis would answer with a second delivery; return the
    delay in seconds."""
    visibility = celeryconfig.broker_transport_options["visibility_timeout"]
    delay = options.get("countdown") or 0
    eta = options.get("eta")
    if eta is not None:
        if eta.tzinfo is None:
            eta = eta.replace(tzinfo=timezone.utc)
        delay = max(delay, (eta - datetime.now(timezone.utc)).total_seconds())
    if delay >= visibility:
        raise AsyncTaskError(
            f"a job delayed by {delay:.0f} s would be delivered twice, since "
            f"Redis hands unfinished jobs out again after {visibility} s; "
            "raise ASYNC_VISIBILITY_TIMEOUT above the longest delay you need"
        )
    return delay


def _current_userid():
    user = getSecurityManager().getUser()
    if user is None or user.getUserName() == "Anonymous User":
        return None
    return user.getId() or user.getUserName()


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


def header_problem(headers, cookies):
    """Say what in ``headers`` or ``cookies`` cannot be sent as it is, or
    ``None``: a name that is not an HTTP token, a control character (CR/LF
    would start another header) or ``;`` (another cookie) in a value, or a
    value outside Latin-1. Values are never quoted: they may be credentials."""
    for kind, values, separators, forbidden in (
        ("header", headers, "", FORBIDDEN_IN_HEADER),
        ("cookie", cookies, ";", FORBIDDEN_IN_COOKIE),
    ):
        for name, value in (values or {}).items():
            if not HTTP_TOKEN.fullmatch(str(name)):
                return f"{kind} name {str(name)!r} is not an HTTP token"
            value = str(value)
            if forbidden.search(value):
                also = f" or {separators!r}" if separators else ""
                return f"the value of {kind} {name} has a control character{also}"
            if NOT_LATIN_1.search(value):
                return f"the value of {kind} {name} has characters outside Latin-1"
    return None


def _as_text(values):
    return {str(name): str(value) for name, value in (values or {}).items()}


def dispatch(url, data=None, headers=None, cookies=None):
    """POST a job to Plone and return the :class:`requests.Response`.

    :raises DispatchError: the job may succeed later (no connection, timeout,
        5xx, 408/409/425/429); Celery tasks retry it.
    :raises AuthorizationError: Plone did not accept the user (401, 403, a
        redirect to or a page of the login form, "Insufficient Privileges").
    :raises JobRefused: any other 4xx answer, or (checked before anything
        is sent) a url that is not plain http(s) or whose origin is not
        allowed (:func:`~ploneintranet.asynctasks.urls.is_allowed`), or a
        header or cookie that could smuggle in another (see
        :func:`header_problem`). An expired job token is an
        :class:`AuthorizationError`, raised before anything is sent.

    Redirects are not followed. Credential values are never logged.
    """
    check_http_url(url)
    problem = header_problem(headers, cookies)
    if problem:
        raise JobRefused(f"not sending a job to {url}: {problem}")
    headers = _as_text(headers)
    user = headers.get(USER_HEADER, "unknown user")
    if not is_allowed(url):
        raise JobRefused(
            f"not sending a job as {user} to {url}: its origin is not allowed "
            f"({allowed_description()}); add the portal's (internal) origin to "
            "ASYNC_ALLOWED_ORIGINS if this is your site"
        )
    token = jobtoken.read(headers.get(jobtoken.TOKEN_HEADER, ""))
    if token is not None and token[2] < time.time():
        raise AuthorizationError(
            f"not sending a job as {user} to {url}: its token expired "
            f"{time.time() - token[2]:.0f} s ago, so Plone would refuse it; it "
            "waited longer than ASYNC_TOKEN_LIFETIME="
            f"{celeryconfig.ASYNC_TOKEN_LIFETIME} s: raise that setting if jobs wait so long"
        )
    started = time.monotonic()
    try:
        response = http_session().post(
            url,
            data=data or {},
            headers=headers,
            cookies=_as_text(cookies),
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
