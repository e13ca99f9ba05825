"""Where a job may go: url resolution and the origin allowlist.

A job carries the user's credentials, so the host it goes to never comes from
the request alone: the request's url (its Host header, a virtual host path)
must name an origin that jobs may go to (:func:`is_allowed`:
``ASYNC_ALLOWED_ORIGINS``, or by default this machine on Plone's own port), or
be mapped by the site administrator to an internal address in the registry
record :data:`REPLACEMENT_MAPPING_RECORD`. The worker checks the same list
again before it sends anything.
"""

from functools import lru_cache
import ipaddress
from plone.registry.interfaces import IRegistry
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks.errors import AsyncTaskError
from ploneintranet.asynctasks.errors import JobRefused
import re
import socket
from urllib.parse import urlsplit
from zope.component import queryUtility
from zope.component.hooks import getSite


#: Registry record: ``{public portal url: internal url}``, so that jobs can
#: bypass the public proxy, e.g. ``{"https://example.com": "http://127.0.0.1:8080
#: /VirtualHostBase/https/example.com:443/Plone/VirtualHostRoot"}``.
REPLACEMENT_MAPPING_RECORD = "ploneintranet.asynctasks.portal_url_replacement_mapping"


def origin(url):
    """Return ``scheme://host[:port]`` of ``url``, lower case."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


# The password of "scheme://user:password@host", and a query parameter whose
# name says it holds a secret ("?password=...", "&sentinel_password=...").
_URL_PASSWORD = re.compile(r"(://[^/@;\s]*?:)[^/@;\s]*(@)")
_QUERY_SECRET = re.compile(r"([?&][^=&;\s]*(?:pass|pwd|secret|token)[^=&;\s]*=)[^&;\s]*", re.I)


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


def portal_url_replacement_mapping():
    """The registry's mapping of public portal urls to internal ones."""
    registry = queryUtility(IRegistry)
    mapping = registry.get(REPLACEMENT_MAPPING_RECORD) if registry is not None else None
    return dict(mapping or {})


def _split(url):
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
    parts = _split(url)
    if any(ord(char) < 32 or char == "\x7f" for char in url):
        raise JobRefused(f"url {masked_url(url)!r} contains control characters")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise JobRefused(f"url {masked_url(url)!r} is not an http(s) url")
    if parts.username is not None or parts.password is not None:
        raise JobRefused(f"url {masked_url(url)!r} carries a user name or password")


def resolve_url(context, url, own_port=None):
    """Turn the url of a job into the absolute url the worker will POST to.

    ``None`` is the context's url; ``x`` and ``/x`` are relative to the
    context's url; an absolute url is kept, but must be on the portal's
    origin. The result is then moved to the internal address given by
    :data:`REPLACEMENT_MAPPING_RECORD`, if any, and must be allowed by
    :func:`is_allowed` (``own_port``: the port this Plone listens on).

    :raises AsyncTaskError: saying which setting admits the url, if any.
    """
    base = context.absolute_url()
    try:
        if not url:
            resolved = base
        elif not _split(url).scheme and not url.startswith("//"):
            resolved = base.rstrip("/") + "/" + url.lstrip("/")
        else:
            resolved = url
        check_http_url(resolved)
    except JobRefused as error:
        raise AsyncTaskError(
            f"{error}; give a url relative to the context, such as '@@my-view'"
        ) from None
    site = getSite()
    allowed = origin((site if site is not None else context).absolute_url())
    if origin(resolved) != allowed:
        raise AsyncTaskError(
            f"url {url!r} is not on the portal's origin {allowed}; jobs carry "
            "the user's credentials, so they only go to this site. Give a url "
            "relative to the context instead"
        )
    for public, internal in portal_url_replacement_mapping().items():
        public = public.rstrip("/")
        if resolved == public or resolved.startswith(public + "/"):
            resolved = internal.rstrip("/") + resolved[len(public):]
            break
    check_target(resolved, own_port)
    return resolved


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
            f"the internal url in the registry record {REPLACEMENT_MAPPING_RECORD}"
        )
