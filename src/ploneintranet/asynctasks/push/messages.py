"""Push messages: what a finished job tells its user's browsers.

A message is the JSON object ``{"task", "status", "snippet_url", "target"}``,
published on the Redis channel ``ASYNC_PUSH_CHANNEL_PREFIX + userid``. The push
server relays it to every socket that Plone authenticated as that user; the
browser then fetches ``snippet_url`` and puts it in place of the element whose
id is ``target``. A message of status ``logout`` (:func:`publish_logout`) is
not relayed: the push server closes the user's sockets.
"""

import json
import logging
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks.broker import client_for
from ploneintranet.asynctasks.wire import job_user
import redis


logger = logging.getLogger("ploneintranet.asynctasks")

DONE = "done"
FAILED = "failed"
#: The user logged out: their sockets are closed, the message is not relayed.
LOGOUT = "logout"
#: Job data fields naming where the browser finds the finished work.
SNIPPET_URL_FIELD = "push_snippet_url"
TARGET_FIELD = "push_target"


def channel(userid):
    """The Redis pub/sub channel of ``userid``."""
    return celeryconfig.ASYNC_PUSH_CHANNEL_PREFIX + userid


def redis_connection(url=None):
    """This process's client of the push Redis (``ASYNC_PUSH_REDIS_URL``)."""
    return client_for(url or celeryconfig.ASYNC_PUSH_REDIS_URL, celeryconfig.ASYNC_PUSH_REDIS_OPTIONS)


def publish(userid, task, status, snippet_url="", target="", url=None):
    """Publish a message to ``userid``'s channel; return how many push
    servers received it (0: the user has no open socket)."""
    message = json.dumps({"task": task, "status": status, "snippet_url": snippet_url, "target": target})
    return redis_connection(url).publish(channel(userid), message)


def publish_logout(userid, url=None):
    """Tell the push servers that ``userid`` logged out, so that they close
    the user's sockets; return how many push servers received it."""
    return publish(userid, "", LOGOUT, url=url)


def is_logout(text):
    """True if the message ``text`` is a :func:`publish_logout` message."""
    try:
        return json.loads(text).get("status") == LOGOUT
    except (ValueError, AttributeError):
        return False


def publish_job(task, status, data, headers):
    """Tell the user of a job that it is ``done`` or ``failed``.

    ``data`` (the job's form) names the snippet and target. A Redis error is
    logged, not raised: the job's work is done either way, and the page
    catches up when its socket (re)connects.
    """
    userid = job_user(headers)
    if userid is None:
        return 0
    data = data or {}
    try:
        return publish(userid, task, status, data.get(SNIPPET_URL_FIELD, ""), data.get(TARGET_FIELD, ""))
    except redis.RedisError as error:
        logger.warning("could not push %s of %s to %s: %s", status, task, userid, error)
        return 0
