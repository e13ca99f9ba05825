"""Job tokens: what a job carries instead of its user's login.

A token names the user, the path of the one url its job is sent to, and when
it expires, signed (HMAC-SHA256) with a secret of the site: plone.keyring's
``_system`` ring. The site's PAS plugin (:mod:`ploneintranet.asynctasks.pas`)
accepts it only for a request to that path before that time. So whoever reads
a job in Redis, Flower or a log holds nothing that logs in anywhere else or
later: at most they can repeat that one job until its token expires.

This module imports nothing from Zope: the worker reads a token's expiry to
refuse an expired job without sending it.
"""

import base64
import hashlib
import hmac
import json
import time
from urllib.parse import unquote
from urllib.parse import urlsplit


#: Id of the PAS plugin that accepts tokens, in the site's ``acl_users``.
PLUGIN_ID = "asynctasks_job_token"
#: The plone.keyring ring whose secrets sign tokens.
RING = "_system"
_VERSION = 1


def target_path(url):
    """The path a token of ``url`` is bound to, as a WSGI server hands it to
    Zope (``PATH_INFO``: percent-decoded, as Latin-1 text)."""
    return unquote(urlsplit(url).path, encoding="latin-1") or "/"


def _mac(secret, payload):
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hmac.new(key, payload.encode("ascii"), hashlib.sha256).hexdigest()


def sign(secret, userid, url, expires):
    """A token for ``userid``, valid for a request to the path of ``url``
    until ``expires`` (seconds since the epoch)."""
    fields = json.dumps([_VERSION, userid, target_path(url), int(expires)], separators=(",", ":"))
    payload = base64.urlsafe_b64encode(fields.encode("utf-8")).decode("ascii")
    return f"{payload}.{_mac(secret, payload)}"


def read(token):
    """``(userid, path, expires)`` of ``token``, not verified; ``None`` if it
    is not a token of this format."""
    try:
        payload, _ = str(token).split(".", 1)
        version, userid, path, expires = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, TypeError):
        return None
    if version != _VERSION or not isinstance(userid, str) or not isinstance(expires, int):
        return None
    return userid, path, expires


def verify(token, secrets, path, now=None):
    """The user id of ``token`` if one of ``secrets`` signed it, it is bound
    to ``path`` and has not expired; else ``None``."""
    fields = read(token)
    if fields is None:
        return None
    userid, bound_path, expires = fields
    payload, mac = str(token).split(".", 1)
    if not any(hmac.compare_digest(_mac(secret, payload), mac) for secret in secrets if secret):
        return None
    if bound_path != path or expires < (time.time() if now is None else now):
        return None
    return userid
