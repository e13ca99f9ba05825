"""Translations: the message factory of the domain ``ploneintranet.asynctasks``.

Plone side only: the Celery worker and the push server never import this
module (it needs zope.i18nmessageid). The catalogs are ``locales/<lang>/
LC_MESSAGES/ploneintranet.asynctasks.po``; Plone compiles them to ``.mo`` at
start-up when ``zope_i18n_compile_mo_files`` is set in its environment.
``make i18n`` extracts the messages into ``locales/ploneintranet.asynctasks.pot``
and merges them into the ``.po`` files (scripts/i18n.py).
"""

from zope.globalrequest import getRequest
from zope.i18n import translate
from zope.i18nmessageid import MessageFactory


DOMAIN = "ploneintranet.asynctasks"

#: ``_("reachable at ${where}", mapping={"where": url})``: a message of the domain.
_ = MessageFactory(DOMAIN)


def translated(message, request=None):
    """``message`` in the language Plone negotiated for ``request`` (the
    current request if ``None``), its mapping filled in; English when there is
    no request or no catalog of that language."""
    return translate(message, context=getRequest() if request is None else request)


def english(message):
    """``message`` in English, its mapping filled in: for logs and for the
    fields of an API that machines read, whatever the user's language."""
    return translate(message, target_language="en")
