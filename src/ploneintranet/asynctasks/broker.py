"""Redis clients for what Celery does not do itself, and what each broker
lets a job wait for.

One client per url, transport options and process: the ledger and the vote's
check use the broker's Redis; debounce keys the broker's Redis, or with
RabbitMQ the result backend's (:func:`key_store`); push its own url. A
``sentinel://`` url gives a client of the master its sentinels name: after a
failover its next connection goes to the new master, as kombu's does.
"""

from celery.utils.quorum_queues import detect_quorum_queues
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks.errors import AsyncTaskError
import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from urllib.parse import unquote
from urllib.parse import urlsplit


#: Seconds to connect to Redis and to wait for an answer.
TIMEOUT = 5
#: Sentinel's port when a ``sentinel://`` url names none.
SENTINEL_PORT = 26379
#: Longest countdown of Celery's native delayed delivery on RabbitMQ: 28 bits of seconds.
NATIVE_DELAY_LIMIT = 2**28 - 1

_clients = {}


def is_redis(url):
    """True if the broker ``url`` is a Redis one (Sentinel included)."""
    return celeryconfig.broker_kind(url) == "redis"


def is_amqp(url):
    """True if the broker ``url`` is RabbitMQ's."""
    return celeryconfig.broker_kind(url) == "amqp"


def sentinel_address(url):
    """``(sentinels, connection keywords)`` of kombu's Sentinel form
    ``sentinel://[:password@]host:port[/db];sentinel://host:port;...``: the
    sentinels' ``(host, port)`` pairs, and the password, user and database
    of the master, from the first url that names them."""
    sentinels, keywords = [], {}
    for part in url.split(";"):
        if not part.strip():
            continue
        parts = urlsplit(part.strip())
        sentinels.append((parts.hostname or "localhost", parts.port or SENTINEL_PORT))
        if parts.password and "password" not in keywords:
            keywords["password"] = unquote(parts.password)
            if parts.username:
                keywords["username"] = unquote(parts.username)
        if parts.path.strip("/").isdigit() and "db" not in keywords:
            keywords["db"] = int(parts.path.strip("/"))
    return sentinels, keywords


def _sentinel(url, options, module):
    master_name = options.get("master_name")
    if not master_name:
        raise AsyncTaskError(
            "a sentinel:// url needs the name of its master: set master_name in "
            "BROKER_TRANSPORT_OPTIONS (or RESULT_BACKEND_TRANSPORT_OPTIONS, "
            "ASYNC_PUSH_REDIS_OPTIONS for those urls), e.g. "
            '{"master_name": "mymaster"}'
        )
    sentinels, keywords = sentinel_address(url)
    sentinel = module.Sentinel(
        sentinels,
        min_other_sentinels=options.get("min_other_sentinels", 0),
        sentinel_kwargs=options.get("sentinel_kwargs"),
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        **keywords,
    )
    return sentinel.master_for(master_name)


def client_for(url, options=None):
    """This process's client (a connection pool) of the Redis at ``url``;
    for a ``sentinel://`` url, of its master, named by ``master_name`` in
    the transport ``options``."""
    options = {key: value for key, value in (options or {}).items() if key in celeryconfig.SENTINEL_OPTIONS}
    key = (url, repr(sorted(options.items())))
    if key not in _clients:
        if url.startswith("sentinel://"):
            _clients[key] = _sentinel(url, options, redis.sentinel)
        else:
            _clients[key] = redis.Redis.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
    return _clients[key]


def async_client_for(url, options=None):
    """A new asyncio client of the Redis at ``url`` (for the push server);
    of the Sentinel master as :func:`client_for`."""
    if url.startswith("sentinel://"):
        return _sentinel(url, options or {}, redis.asyncio.sentinel)
    return redis.asyncio.Redis.from_url(url)


def redis_client(app, needed_for="this"):
    """The client of the broker of ``app``; raises
    :class:`~ploneintranet.asynctasks.errors.AsyncTaskError` naming
    ``needed_for`` if the broker is not Redis."""
    url = app.conf.broker_url
    if not is_redis(url):
        scheme = (url or "").split(":", 1)[0]
        raise AsyncTaskError(
            f"{needed_for} needs a Redis broker, and the broker is a {scheme}:// url; "
            "set BROKER_URL to a redis:// or sentinel:// url"
        )
    return client_for(url, app.conf.broker_transport_options)


def key_store(app, needed_for="this"):
    """The Redis where this package keeps keys of its own (debounce): the
    broker if it is Redis, else the result backend if that is Redis. Raises
    :class:`~ploneintranet.asynctasks.errors.AsyncTaskError` naming
    ``needed_for`` if neither is."""
    conf = app.conf
    if is_redis(conf.broker_url):
        return client_for(conf.broker_url, conf.broker_transport_options)
    backend = conf.result_backend if isinstance(conf.result_backend, str) else ""
    if is_redis(backend):
        return client_for(backend, conf.result_backend_transport_options)
    raise AsyncTaskError(
        f"{needed_for} keeps its keys in Redis, and neither the broker nor the result "
        "backend is Redis: set CELERY_RESULT_BACKEND to a redis:// or sentinel:// url"
    )


def longest_delay(app):
    """``(seconds, why)``: the longest countdown the broker of ``app`` keeps
    a job for without handing it out twice, and the reason, for a message
    that refuses a longer one."""
    conf = app.conf
    if is_amqp(conf.broker_url):
        if detect_quorum_queues(app, "amqp")[0]:
            return NATIVE_DELAY_LIMIT, (
                "Celery's delayed delivery on RabbitMQ counts at most 2**28 s; use a "
                "periodic task (celery beat) for later work"
            )
        timeout = celeryconfig.ASYNC_AMQP_CONSUMER_TIMEOUT
        return timeout, (
            f"on classic queues the worker holds a delayed job, and RabbitMQ hands it "
            f"out again after consumer_timeout ({timeout:g} s); use quorum queues "
            "(ASYNC_AMQP_QUEUE_TYPE=quorum), whose delayed jobs wait in RabbitMQ"
        )
    visibility = (conf.broker_transport_options or {}).get("visibility_timeout", 3600)
    return visibility, (
        f"Redis hands unfinished jobs out again after {visibility} s; raise "
        "ASYNC_VISIBILITY_TIMEOUT above the longest delay you need"
    )
