"""Event subscribers of push: a user who logs out stops receiving."""

import logging
from ploneintranet.asynctasks.interfaces import IPloneintranetAsyncLayer
from ploneintranet.asynctasks.push import messages
import redis
from zope.globalrequest import getRequest


logger = logging.getLogger("ploneintranet.asynctasks")


def close_sockets_on_logout(event):
    """When a user logs out of a site that has the add-on, tell the push
    servers to close that user's sockets (all of them: the user's other
    browsers, still logged in, open theirs again). A Redis error is logged:
    the logout itself goes on."""
    request = getRequest()
    if request is None or not IPloneintranetAsyncLayer.providedBy(request):
        return
    userid = event.principal.getId()
    try:
        messages.publish_logout(userid)
    except redis.RedisError as error:
        logger.warning("could not tell the push servers that %s logged out: %s", userid, error)
