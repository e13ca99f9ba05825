"""Where a job may go: url resolution and the origin allowlist.

A job carries the user's credentials, so the host it goes to never comes from
the request alone: the request's url (its Host header, a virtual host path)
must name an origin that jobs may go to
(:func:`~ploneintranet.asynctasks.wire.is_allowed`:
``ASYNC_ALLOWED_ORIGINS``, or by default this machine on Plone's own port), or
be mapped by the site administrator to an internal address in the registry
record :data:`REPLACEMENT_MAPPING_RECORD`. The worker checks the same list
again before it sends anything.
"""

from plone.registry.interfaces import IRegistry
from ploneintranet.asynctasks.errors import AsyncTaskError
from ploneintranet.asynctasks.errors import JobRefused
from ploneintranet.asynctasks.wire import check_http_url
from ploneintranet.asynctasks.wire import check_target
from ploneintranet.asynctasks.wire import origin
from ploneintranet.asynctasks.wire import split_url
from zope.component import queryUtility
from zope.component.hooks import getSite


#: Registry record: ``{public portal url: internal url}``, so that jobs can
#: bypass the public proxy, e.g. ``{"https://example.com": "http://127.0.0.1:8080
#: /VirtualHostBase/https/example.com:443/Plone/VirtualHostRoot"}``.
REPLACEMENT_MAPPING_RECORD = "ploneintranet.asynctasks.portal_url_replacement_mapping"


def portal_url_replacement_mapping():
    """The registry's mapping of public portal urls to internal ones."""
    registry = queryUtility(IRegistry)
    mapping = registry.get(REPLACEMENT_MAPPING_RECORD) if registry is not None else None
    return dict(mapping or {})


def resolve_url(context, url, own_port=None):
    """Turn the url of a job into the absolute url the worker will POST to.

    ``None`` is the context's url; ``x`` and ``/x`` are relative to the
    context's url; an absolute url is kept, but must be on the portal's
    origin. The result is then moved to the internal address given by
    :data:`REPLACEMENT_MAPPING_RECORD`, if any, and must be allowed by
    :func:`~ploneintranet.asynctasks.wire.is_allowed` (``own_port``: the port this Plone listens on).

    :raises AsyncTaskError: saying which setting admits the url, if any.
    """
    base = context.absolute_url()
    try:
        if not url:
            resolved = base
        elif not split_url(url).scheme and not url.startswith("//"):
            resolved = base.rstrip("/") + "/" + url.lstrip("/")
        else:
            resolved = url
        check_http_url(resolved)
    except JobRefused as error:
        raise AsyncTaskError(f"{error}; give a url relative to the context, such as '@@my-view'") from None
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
            resolved = internal.rstrip("/") + resolved[len(public) :]
            break
    check_target(resolved, own_port)
    return resolved
