"""The worker side: :func:`dispatch` POSTs a job to Plone as its user.

Celery tasks call it (:mod:`ploneintranet.asynctasks.celerytasks`); it
imports nothing from Zope or Plone.
"""

from http.cookiejar import DefaultCookiePolicy
import logging
import os
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks import jobtoken
from ploneintranet.asynctasks.errors import AuthorizationError
from ploneintranet.asynctasks.errors import DispatchError
from ploneintranet.asynctasks.errors import JobRefused
from ploneintranet.asynctasks.wire import TOKEN_HEADER
from ploneintranet.asynctasks.wire import USER_HEADER
from ploneintranet.asynctasks.wire import allowed_description
from ploneintranet.asynctasks.wire import check_http_url
from ploneintranet.asynctasks.wire import header_problem
from ploneintranet.asynctasks.wire import is_allowed
import requests
import time


logger = logging.getLogger("ploneintranet.asynctasks")

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
        allowed (:func:`~ploneintranet.asynctasks.wire.is_allowed`), or a
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
    token = jobtoken.read(headers.get(TOKEN_HEADER, ""))
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
        raise DispatchError(f"POST {url} as {user} failed: {type(error).__name__}: {error}") from None
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
