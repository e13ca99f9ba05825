"""The broker's Redis, for what Celery does not do: the ledger, debounce and
the broker check at commit."""

from ploneintranet.asynctasks.errors import AsyncTaskError
from ploneintranet.asynctasks.urls import masked_url
import redis


_redis_clients = {}


def is_redis(url):
    """True if the broker ``url`` is a Redis one."""
    return (url or "").startswith(("redis://", "rediss://", "unix://"))


def redis_client(app, needed_for="this"):
    """A Redis client (a connection pool) for the broker of ``app``; raises
    :class:`~ploneintranet.asynctasks.errors.AsyncTaskError` naming
    ``needed_for`` if the broker is not Redis."""
    url = app.conf.broker_url
    if not is_redis(url):
        raise AsyncTaskError(
            f"{needed_for} needs a Redis broker, and the broker is {masked_url(url)}; "
            "set BROKER_URL to a redis:// url"
        )
    if url not in _redis_clients:
        _redis_clients[url] = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5
        )
    return _redis_clients[url]
