"""Redis clients: one per url and process, for what Celery does not do
itself (the ledger, debounce, the broker check at commit, push messages)."""

from ploneintranet.asynctasks.errors import AsyncTaskError
import redis


_clients = {}


def is_redis(url):
    """True if the broker ``url`` is a Redis one."""
    return (url or "").startswith(("redis://", "rediss://", "unix://"))


def client_for(url):
    """This process's client (a connection pool) of the Redis at ``url``."""
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    return _clients[url]


def redis_client(app, needed_for="this"):
    """The client of the broker of ``app``; raises
    :class:`~ploneintranet.asynctasks.errors.AsyncTaskError` naming
    ``needed_for`` if the broker is not Redis."""
    url = app.conf.broker_url
    if not is_redis(url):
        scheme = (url or "").split(":", 1)[0]
        raise AsyncTaskError(
            f"{needed_for} needs a Redis broker, and the broker is a {scheme}:// url; "
            "set BROKER_URL to a redis:// url"
        )
    return client_for(url)
