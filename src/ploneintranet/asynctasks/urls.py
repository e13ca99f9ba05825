"""Where a job may go: url resolution and the origin allowlist.

A job carries the user's credentials, so it is only ever sent to the portal's
own origin, or to the internal address the site administrator mapped it to
in the registry record :data:`REPLACEMENT_MAPPING_RECORD`.
"""

from plone.registry.interfaces import IRegistry
from ploneintranet.asynctasks.errors import AsyncTaskError
from ploneintranet.asynctasks.errors import JobRefused
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


def masked_url(url):
    """``url`` with its password, if any, replaced by ``***``, for messages."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


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


def resolve_url(context, url):
    """Turn the url of a job into the absolute url the worker will POST to.

    ``None`` is the context's url; ``x`` and ``/x`` are relative to the
    context's url; an absolute url is kept, but must be on the portal's
    origin. The result is then moved to the internal address given by
    :data:`REPLACEMENT_MAPPING_RECORD`, if any.
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
            return internal.rstrip("/") + resolved[len(public):]
    return resolved
