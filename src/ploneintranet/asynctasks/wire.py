"""The wire contract between Plone and the worker: what a :class:`Job` is,
the names it carries, and the checks of where it may go.

Both sides import this module, and it imports nothing from Zope or Plone: a
Celery worker and the push server run without them.
"""

from dataclasses import dataclass
from dataclasses import field
from functools import lru_cache
import ipaddress
import json
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks.errors import AsyncTaskError
from ploneintranet.asynctasks.errors import JobRefused
import re
import socket
from urllib.parse import unquote
from urllib.parse import urlsplit
import uuid


#: Cookie that carries a Plone login (plone.session / PlonePAS).
AUTH_COOKIE = "__ac"
#: Header with the Celery task name, for routing by HAProxy or Nginx.
TASK_NAME_HEADER = "X-celery-task-name"
#: Header naming the user a job runs as; for logs and push only, never trusted.
USER_HEADER = "X-Async-User"
#: Header that carries a job's token (:mod:`~ploneintranet.asynctasks.jobtoken`).
TOKEN_HEADER = "X-Async-Token"
#: Form field that plone.protect checks; it differs per job, so it is not part
#: of what makes two jobs identical.
AUTHENTICATOR_FIELD = "_authenticator"

# A header or cookie name: an HTTP token (RFC 9110), so nothing can end it early.
HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# In a value: a control character (CR/LF would start another header), and in
# a cookie also ";" (another cookie); a regex: this runs for every job.
FORBIDDEN_IN_HEADER = re.compile(r"[\x00-\x1f\x7f]")
FORBIDDEN_IN_COOKIE = re.compile(r"[\x00-\x1f\x7f;]")
NOT_LATIN_1 = re.compile(r"[^\x00-\xff]")
# The password of "scheme://user:password@host", and a query parameter whose
# name says it holds a secret ("?password=...", "&sentinel_password=...").
_URL_PASSWORD = re.compile(r"(://[^/@;\s]*?:)[^/@;\s]*(@)")
_QUERY_SECRET = re.compile(r"([?&][^=&;\s]*(?:pass|pwd|secret|token)[^=&;\s]*=)[^&;\s]*", re.I)


def origin(url):
    """Return ``scheme://host[:port]`` of ``url``, lower case."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def masked_url(url):
    """``url`` with every password replaced by ``***``, for messages and logs.

    Masks the password of each url of a ``;``-separated list (kombu's
    failover urls) and the value of every query parameter whose name holds
    ``pass``, ``pwd``, ``secret`` or ``token``.
    """
    text = str(url or "")
    return _QUERY_SECRET.sub(r"\1***", _URL_PASSWORD.sub(r"\1***\2", text))


@lru_cache(maxsize=1)
def _own_host_names():
    names = {"localhost", socket.gethostname().lower()}
    try:
        names.add(socket.getfqdn().lower())
    except OSError:
        pass
    return frozenset(names)


def is_this_machine(host):
    """True if ``host`` (a url's host name) is a loopback address or this
    machine's own name."""
    host = (host or "").lower().strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in _own_host_names()


def is_allowed(url, own_port=None):
    """True if jobs may be sent to ``url``: its origin is in
    ``ASYNC_ALLOWED_ORIGINS`` or, when that is empty, it is on this machine
    (:func:`is_this_machine`), over http, on port ``own_port`` if given
    (Plone passes the port it listens on)."""
    if celeryconfig.ASYNC_ALLOWED_ORIGINS:
        return origin(url) in celeryconfig.ASYNC_ALLOWED_ORIGINS
    parts = urlsplit(url)
    if parts.scheme != "http" or not is_this_machine(parts.hostname):
        return False
    return own_port is None or (parts.port or 80) == int(own_port)


def allowed_description(own_port=None):
    """The origins :func:`is_allowed` accepts, in words, for messages."""
    if celeryconfig.ASYNC_ALLOWED_ORIGINS:
        return "ASYNC_ALLOWED_ORIGINS=" + ",".join(celeryconfig.ASYNC_ALLOWED_ORIGINS)
    port = f" port {own_port}" if own_port else " any port"
    return f"ASYNC_ALLOWED_ORIGINS is not set, so only this machine over http on{port}"


def split_url(url):
    """``urlsplit(url)``, its port checked; :class:`JobRefused` if it fails."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError unless the port is a number
    except ValueError as error:
        # The url is not quoted: it may hold a password we could not mask.
        raise JobRefused(f"the job's url is not a valid url ({error})") from None
    return parts


def check_http_url(url):
    """Raise :class:`JobRefused` unless ``url`` is a plain http(s) url.

    No other scheme, no user name or password in the url, no control
    characters, a numeric port: what the worker checks before it sends
    anything. Messages mask a password in the url.
    """
    parts = split_url(url)
    if any(ord(char) < 32 or char == "\x7f" for char in url):
        raise JobRefused(f"url {masked_url(url)!r} contains control characters")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise JobRefused(f"url {masked_url(url)!r} is not an http(s) url")
    if parts.username is not None or parts.password is not None:
        raise JobRefused(f"url {masked_url(url)!r} carries a user name or password")


def check_target(url, own_port=None):
    """Raise :class:`AsyncTaskError` unless a job may be sent to ``url``: a
    plain http(s) url (:func:`check_http_url`) whose origin is allowed
    (:func:`is_allowed`; ``own_port``: the port this Plone listens on)."""
    try:
        check_http_url(url)
    except JobRefused as error:
        raise AsyncTaskError(str(error)) from None
    if not is_allowed(url, own_port):
        raise AsyncTaskError(
            f"jobs may not be sent to {origin(url)}, where this request "
            f"says the site is (its Host header or virtual host path): "
            f"{allowed_description(own_port)}. Jobs carry the user's "
            "credentials. If it is an address of this site, add it to "
            "ASYNC_ALLOWED_ORIGINS (for Plone and the worker), or map it to "
            "the internal url in the registry record "
            "ploneintranet.asynctasks.portal_url_replacement_mapping"
        )


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


def job_user(headers):
    """The user a job runs as (its :data:`USER_HEADER`), or ``None`` for an
    anonymous job."""
    value = (headers or {}).get(USER_HEADER)
    userid = unquote(value) if value else None
    return None if userid in (None, "", "Anonymous User") else userid


def reprs_for_monitors(args, kwargs=None):
    """The ``argsrepr`` and ``kwargsrepr`` options of a job's message: the
    url only.

    Celery copies them into the message headers, where Flower, events and
    logs show them; a repr of the arguments themselves would show the job's
    credentials and token."""
    shown = f"({args[0]!r}, ...)" if args else "()"
    return {"argsrepr": shown, "kwargsrepr": "{...}" if kwargs else "{}"}


_FIELDS = ("url", "data", "headers", "cookies")


def fingerprint(task_name, url, data, userid):
    """What makes two jobs the same: task, url, data (without the token) and
    the user they run as (``None``: anonymous), so that one user's job never
    replaces another's."""
    data = {k: v for k, v in (data or {}).items() if k != AUTHENTICATOR_FIELD}
    return json.dumps([task_name, url, data, userid], sort_keys=True)


@dataclass(frozen=True)
class Job:
    """One job: a POST of ``data`` to ``url`` with ``headers`` and
    ``cookies``, by the Celery ``task``, sent with the ``apply_async``
    ``options`` (``task_id`` always among them)."""

    task: object
    url: str
    data: dict = None
    headers: dict = None
    cookies: dict = None
    options: dict = field(default_factory=dict)
    #: The user it runs as (``None``: anonymous); two users' jobs never merge.
    userid: str = None
    #: Seconds to wait for a later identical job that replaces this one.
    debounce: float = None

    @classmethod
    def create(cls, task, args, options, userid=None, debounce=None):
        """A new job of ``task`` with the message arguments ``args``: a task
        id of its own, a debounce as its countdown, and a message that shows
        monitors its url only."""
        options = dict(options, **reprs_for_monitors(args))
        options.setdefault("task_id", str(uuid.uuid4()))
        if debounce:
            options.setdefault("countdown", debounce)
        return cls(task, *args, options=options, userid=userid, debounce=debounce)

    @classmethod
    def from_call(cls, task, args, kwargs, options):
        """The job of ``task.apply_async(args, kwargs, **options)``, or
        ``None`` if those are not a job's arguments."""
        values = dict(zip(_FIELDS, args or (), strict=False))
        if len(args or ()) > len(_FIELDS) or not set(kwargs or {}) <= set(_FIELDS) - set(values):
            return None
        values.update(kwargs or {})
        if "url" not in values:
            return None
        return cls(task, options=options, **values)

    @property
    def args(self):
        """The arguments of its message: ``(url, data, headers, cookies)``."""
        return (self.url, self.data, self.headers, self.cookies)

    @property
    def id(self):
        """Its task id."""
        return self.options["task_id"]

    @property
    def fingerprint(self):
        """Equal for two jobs that are the same (:func:`fingerprint`)."""
        return fingerprint(self.task.name, self.url, self.data, self.userid)
