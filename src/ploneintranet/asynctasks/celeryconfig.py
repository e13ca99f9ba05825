"""Every setting of ploneintranet.asynctasks, read from the environment.

Celery reads the lowercase names of this module (``broker_url``, ...) through
``app.config_from_object``. Our own settings for sending jobs are the
uppercase ``ASYNC_*`` names; :mod:`ploneintranet.asynctasks.core` reads them
from here too, so there is one place to look.

The same environment must be given to the Plone instances and to the Celery
worker, since both ends talk to the same broker.

====================================  ======================================  =======================================
variable                              default                                 meaning
====================================  ======================================  =======================================
``BROKER_URL``                        ``redis://localhost:6379/0``            Celery broker: ``redis://``, ``rediss://``,
                                                                              ``unix://``, ``sentinel://h:p;sentinel://h:p``
                                                                              or ``amqp://`` (RabbitMQ), see below
``BROKER_TRANSPORT_OPTIONS``          (none)                                  a JSON object merged into Celery's
                                                                              ``broker_transport_options``, e.g.
                                                                              ``{"master_name": "mymaster"}``
``CELERY_RESULT_BACKEND``             the broker url if it is Redis           where task results are kept; with
                                                                              RabbitMQ a Redis (``redis://`` or
                                                                              ``sentinel://``) is needed
``RESULT_BACKEND_TRANSPORT_OPTIONS``  the broker's Sentinel options if the    a JSON object merged into Celery's
                                      results are kept in the broker          ``result_backend_transport_options``
``ASYNC_AMQP_QUEUE_TYPE``             ``quorum``                              RabbitMQ only: ``quorum`` (replicated,
                                                                              delays wait in RabbitMQ) or ``classic``
``ASYNC_AMQP_CONSUMER_TIMEOUT``       ``1800``                                RabbitMQ only: its ``consumer_timeout``
                                                                              in seconds (RabbitMQ's default)
``ASYNC_REDIS_WAIT_REPLICAS``         ``0``                                   Redis only: replicas that must have the
                                                                              jobs of a transaction before Plone goes
                                                                              on (Redis ``WAIT``); 1 with Sentinel
``ASYNC_REDIS_WAIT_TIMEOUT``          ``1``                                   seconds to wait for them
``ASYNC_SENTINEL_FAILOVER_WAIT``      ``60``                                  Sentinel only: seconds a committed
                                                                              transaction's jobs wait for a new master
                                                                              when the master fails as they are sent
``ASYNC_ENABLED``                     ``true``                                ``false`` runs jobs eagerly, see below
``ASYNC_CONNECT_TIMEOUT``             ``5``                                   seconds to connect to Plone
``ASYNC_READ_TIMEOUT``                ``300``                                 seconds to wait for Plone's answer
``ASYNC_MAX_RETRIES``                 ``6``                                   retries of a job that failed for a
                                                                              reason that may pass (5xx, timeout, ...)
``ASYNC_RETRY_BACKOFF_MAX``           ``600``                                 longest wait between two retries, seconds
``ASYNC_VISIBILITY_TIMEOUT``          ``3600``                                seconds before Redis redelivers a job
                                                                              that a worker took but did not finish
``ASYNC_RESULT_EXPIRES``              ``3600``                                seconds task results are kept
``ASYNC_SWEEP_INTERVAL``              ``10``                                  seconds between two looks for jobs a
                                                                              killed worker lost (:mod:`.ledger`)
``ASYNC_ALLOWED_ORIGINS``             this machine: loopback and the host's   comma-separated origins jobs may be sent
                                      own name (Plone: on its own port)       to, e.g. ``https://example.com``; Plone
                                                                              and the worker both refuse any other
``ASYNC_CREDENTIALS``                 ``token``                               what a job carries to act as its user:
                                                                              ``token`` (signed, for one url, expires)
                                                                              or ``forward`` (the user's own cookie or
                                                                              Authorization header, as the seed did)
``ASYNC_TOKEN_LIFETIME``              ``21600``                               seconds a job's token is valid (6 hours)
``ASYNC_WHEN_BROKER_DOWN``            ``keep``                                a save while the broker does not answer:
                                                                              ``keep`` its jobs in the site's outbox
                                                                              (sent when it is back) or ``refuse`` it
``ASYNC_OUTBOX_RETRY``                ``5``                                   seconds between two looks of a Plone
                                                                              process at the outbox
``ASYNC_DATABASE_WAIT``               ``60``                                  seconds a Plone instance on RelStorage
                                                                              waits for its database to answer (a
                                                                              restart) before a request fails
``ASYNC_PREVIEW_TIMEOUT``             ``20``                                  seconds a conversion for a preview may
                                                                              take; then the file gets no preview
``ASYNC_PREVIEW_MEMORY_MB``           ``1024``                                memory (address space) of a conversion
``ASYNC_MAX_JOB_BYTES``               ``1000000``                             largest job, as JSON, Plone will enqueue
``ASYNC_TASK_ROUTES``                 ``reindex_object`` and ``post`` on      comma-separated ``task=queue`` pairs; the
                                      ``high`` (see below)                    task may be a glob such as ``my.addon.*``
``ASYNC_PUSH_PORT``                   ``8765``                                port of the websocket push server
``ASYNC_PUSH_ADDRESS``                ``127.0.0.1``                           address the push server listens on
``ASYNC_PUSH_PLONE_URL``              ``http://localhost:8080/Plone``         the site the push server asks who opened
                                                                              a socket; its only outgoing request
``ASYNC_PUSH_ALLOWED_ORIGINS``        the origin of ``ASYNC_PUSH_PLONE_URL``  comma-separated origins of the pages that
                                                                              may open a socket (the public origin)
``ASYNC_PUSH_PUBLIC_URL``             (none: port ``ASYNC_PUSH_PORT`` of the  websocket url browsers connect to, e.g.
                                      page's host, path ``/push``)            ``/push`` behind a proxy
``ASYNC_PUSH_CHANNEL_PREFIX``         ``ploneintranet.asynctasks:push:``      Redis pub/sub channel of a user: this
                                                                              prefix and the user id
``ASYNC_PUSH_REDIS_URL``              the broker url if it is Redis, else     Redis of the push channels
                                      the result backend's
``ASYNC_PUSH_REDIS_OPTIONS``          those of that url                       its transport options, a JSON object,
                                                                              e.g. ``{"master_name": "mymaster"}``
``ASYNC_PUSH_MAX_MESSAGE_BYTES``      ``4096``                                largest frame a browser may send; larger
                                                                              ones close the socket
``ASYNC_PUSH_MAX_SOCKETS_PER_USER``   ``20``                                  open sockets of one user; more are refused
``ASYNC_PUSH_UPGRADE_TIMEOUT``        ``10``                                  seconds a client has to send its request
                                                                              and finish the websocket upgrade
``ASYNC_PUSH_IDLE_TIMEOUT``           ``90``                                  seconds without an answer to a ping
                                                                              before a socket is closed
====================================  ======================================  =======================================

``ASYNC_ENABLED=false`` is for development without a worker: Celery runs each
task in the process that enqueues it (``task_always_eager``). The job is still
an HTTP POST to Plone, sent when the user's transaction commits, from the
thread that served the user, so the user waits for it and the instance needs a
second free thread (waitress has four by default) to answer it. Retries,
countdowns and routing do not apply. Never use it in production.

Queues: ``ASYNC_TASK_ROUTES`` puts each task's jobs in a named queue, so that
separate workers (``celery worker -Q high``) can serve urgent and slow work.
The default is
``ploneintranet.asynctasks.celerytasks.reindex_object=high,ploneintranet.asynctasks.celerytasks.post=high``;
a value replaces it as a whole, and ``*=celery`` routes nothing away. Tasks
that no route names, ``add`` of ``@@async-status`` among them, wait in Celery's
default queue ``celery``. ``ASYNC_QUEUES`` lists the default queue and
every routed one: a worker started without ``-Q`` consumes all of them, so one
worker is always a complete setup. A job in a queue that no worker consumes
waits forever. Queue names are letters, digits, ``.``, ``_`` and ``-``; a
slow queue ``low`` is served by ``make run-zeo`` and waits for tasks such as
previews (``my.addon.celerytasks.preview=low``).

Brokers (:doc:`/deployment` says how to run each): plain Redis; Redis with
Sentinel, ``BROKER_URL=sentinel://10.0.0.1:26379;sentinel://10.0.0.2:26379;...``
with ``BROKER_TRANSPORT_OPTIONS={"master_name": "mymaster"}`` (every Redis
connection of this package follows the master the sentinels name); RabbitMQ,
``BROKER_URL=amqp://user:password@host:5672/vhost`` with a Redis
``CELERY_RESULT_BACKEND``, which also keeps the debounce keys and the push
channels. On RabbitMQ the task queues are durable quorum queues behind topic
exchanges, delayed jobs wait in RabbitMQ (Celery's native delayed delivery)
and every publish waits for RabbitMQ's confirm (``confirm_publish``). A
combination that cannot work is refused when this module is imported, by
Plone and by the worker alike, with a message saying what to set.
"""

import json
from kombu import Exchange
from kombu import Queue
import os
import re


def _env_flag(name, default):
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    value = value.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"environment variable {name}={value!r} is not a boolean: use true or false")


def _env_number(name, default, kind=float):
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        number = kind(value)
    except ValueError:
        raise ValueError(
            f"environment variable {name}={value!r} is not a number: use a {kind.__name__} such as {default}"
        ) from None
    if number < 0:
        raise ValueError(f"environment variable {name}={value!r} is negative: use a value such as {default}")
    return number


def _env_origins(name):
    """Read comma-separated origins (``scheme://host[:port]``) from ``name``:
    lower case, without a trailing slash."""
    return [value.strip().rstrip("/").lower() for value in os.environ.get(name, "").split(",") if value.strip()]


def _env_json_object(name):
    """Read a JSON object from ``name``; ``{}`` if it is not set."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return {}
    try:
        parsed = json.loads(value)
        problem = None if isinstance(parsed, dict) else f"a JSON {type(parsed).__name__}"
    except ValueError as error:
        problem = f"not JSON: {error}"
    if problem:
        # the value is not shown: it may hold a password (sentinel_kwargs)
        raise ValueError(
            f"environment variable {name} is not a JSON object ({problem}): set it "
            'to one such as {"master_name": "mymaster"}, or leave it unset'
        )
    return parsed


_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _env_routes(name, default):
    """Read ``task=queue,...`` pairs from ``name``; return ``{task: queue}``."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return dict(default)
    routes = {}
    for item in value.split(","):
        if not item.strip():
            continue
        task, sep, queue = (part.strip() for part in item.partition("="))
        if not sep or not task or not _QUEUE_NAME.match(queue):
            raise ValueError(
                f"environment variable {name} has {item.strip()!r}, which is "
                "not task=queue: use pairs such as "
                "ploneintranet.asynctasks.celerytasks.post=high, separated by "
                "commas (queue names are letters, digits, '.', '_' and '-')"
            )
        routes[task] = queue
    return routes


# --- ploneintranet.asynctasks' own settings --------------------------------

ASYNC_ENABLED = _env_flag("ASYNC_ENABLED", True)
ASYNC_CONNECT_TIMEOUT = _env_number("ASYNC_CONNECT_TIMEOUT", 5.0)
ASYNC_READ_TIMEOUT = _env_number("ASYNC_READ_TIMEOUT", 300.0)
ASYNC_MAX_RETRIES = _env_number("ASYNC_MAX_RETRIES", 6, int)
ASYNC_RETRY_BACKOFF_MAX = _env_number("ASYNC_RETRY_BACKOFF_MAX", 600, int)
ASYNC_MAX_JOB_BYTES = _env_number("ASYNC_MAX_JOB_BYTES", 1_000_000, int)
# A job lost by a killed worker is sent again after two to three of these.
ASYNC_SWEEP_INTERVAL = _env_number("ASYNC_SWEEP_INTERVAL", 10.0)
if not ASYNC_SWEEP_INTERVAL:
    raise ValueError(
        "environment variable ASYNC_SWEEP_INTERVAL=0 would look for lost jobs "
        "without pause: use a number of seconds such as 10"
    )
# Where jobs (and so credentials) may go; empty: this machine only (urls.py).
ASYNC_ALLOWED_ORIGINS = _env_origins("ASYNC_ALLOWED_ORIGINS")
ASYNC_CREDENTIALS = (os.environ.get("ASYNC_CREDENTIALS") or "token").strip().lower()
if ASYNC_CREDENTIALS not in ("token", "forward"):
    raise ValueError(
        f"environment variable ASYNC_CREDENTIALS={ASYNC_CREDENTIALS!r} is not "
        "token or forward: use token (recommended) or forward"
    )
ASYNC_TOKEN_LIFETIME = _env_number("ASYNC_TOKEN_LIFETIME", 21600, int)
ASYNC_WHEN_BROKER_DOWN = (os.environ.get("ASYNC_WHEN_BROKER_DOWN") or "keep").strip().lower()
if ASYNC_WHEN_BROKER_DOWN not in ("keep", "refuse"):
    raise ValueError(
        f"environment variable ASYNC_WHEN_BROKER_DOWN={ASYNC_WHEN_BROKER_DOWN!r} is not "
        "keep or refuse: use keep (the save succeeds, its jobs wait in the site's "
        "outbox) or refuse (the save fails while the broker is down)"
    )
ASYNC_OUTBOX_RETRY = _env_number("ASYNC_OUTBOX_RETRY", 5.0)
ASYNC_DATABASE_WAIT = _env_number("ASYNC_DATABASE_WAIT", 60.0)
ASYNC_PREVIEW_TIMEOUT = _env_number("ASYNC_PREVIEW_TIMEOUT", 20.0)
ASYNC_PREVIEW_MEMORY_MB = _env_number("ASYNC_PREVIEW_MEMORY_MB", 1024, int)

#: Celery's queue for the tasks that no route names.
DEFAULT_QUEUE = "celery"
#: Task name (or glob) -> queue; jobs users wait for go to ``high``.
ASYNC_TASK_ROUTES = _env_routes(
    "ASYNC_TASK_ROUTES",
    {
        "ploneintranet.asynctasks.celerytasks.reindex_object": "high",
        "ploneintranet.asynctasks.celerytasks.post": "high",
    },
)
#: Every queue a job may be put in: the default queue first, then the routed.
ASYNC_QUEUES = tuple(dict.fromkeys([DEFAULT_QUEUE, *ASYNC_TASK_ROUTES.values()]))

# --- the websocket push server (ploneintranet.asynctasks.push) --------------

ASYNC_PUSH_PORT = _env_number("ASYNC_PUSH_PORT", 8765, int)
ASYNC_PUSH_ADDRESS = os.environ.get("ASYNC_PUSH_ADDRESS") or "127.0.0.1"
ASYNC_PUSH_PLONE_URL = (os.environ.get("ASYNC_PUSH_PLONE_URL") or "http://localhost:8080/Plone").rstrip("/")
ASYNC_PUSH_ALLOWED_ORIGINS = _env_origins("ASYNC_PUSH_ALLOWED_ORIGINS")
ASYNC_PUSH_PUBLIC_URL = os.environ.get("ASYNC_PUSH_PUBLIC_URL", "").strip()
ASYNC_PUSH_CHANNEL_PREFIX = os.environ.get("ASYNC_PUSH_CHANNEL_PREFIX") or "ploneintranet.asynctasks:push:"
ASYNC_PUSH_MAX_MESSAGE_BYTES = _env_number("ASYNC_PUSH_MAX_MESSAGE_BYTES", 4096, int)
ASYNC_PUSH_MAX_SOCKETS_PER_USER = _env_number("ASYNC_PUSH_MAX_SOCKETS_PER_USER", 20, int)
ASYNC_PUSH_UPGRADE_TIMEOUT = _env_number("ASYNC_PUSH_UPGRADE_TIMEOUT", 10.0)
ASYNC_PUSH_IDLE_TIMEOUT = _env_number("ASYNC_PUSH_IDLE_TIMEOUT", 90.0)

# --- the broker ----------------------------------------------------------------

#: URL schemes of the Redis brokers (kombu's Redis and Sentinel transports).
REDIS_SCHEMES = ("redis", "rediss", "unix", "sentinel")
#: URL schemes of RabbitMQ (kombu's py-amqp transport).
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
#: Transport options that say how to reach a Sentinel master.
SENTINEL_OPTIONS = ("master_name", "sentinel_kwargs", "min_other_sentinels")
#: Queue types of RabbitMQ that the task queues may have.
AMQP_QUEUE_TYPES = ("quorum", "classic")


def broker_kind(url):
    """``"redis"`` (Redis or Sentinel), ``"amqp"`` (RabbitMQ) or ``None``
    for any other url; a ``;``-separated list of urls (kombu's failover or
    Sentinel form) must be of one kind."""
    schemes = {part.split("://", 1)[0].strip().lower() for part in str(url or "").split(";") if part.strip()}
    if schemes and schemes <= set(REDIS_SCHEMES):
        return "redis"
    if schemes and schemes <= set(AMQP_SCHEMES):
        return "amqp"
    return None


def _masked(url):
    # the password of each url; wire.masked_url imports this module
    return re.sub(r"(://[^/@;\s]*?:)[^/@;\s]*(@)", r"\1***\2", str(url or ""))


def _check_sentinel(url, options, variable):
    if str(url).startswith("sentinel://") and not options.get("master_name"):
        raise ValueError(
            f"{_masked(url)} is a Sentinel url, and Sentinel must be told which "
            f"master to follow: set {variable} to a JSON object such as "
            '{"master_name": "mymaster"} (the name in the sentinels\' configuration)'
        )


def broker_settings(
    broker_url, result_backend=None, broker_options=None, backend_options=None, amqp_queue_type="quorum"
):
    """The Celery settings that depend on the broker, for ``broker_url`` and
    ``result_backend`` (``None``: the broker, if it is Redis) with the
    transport options given in ``BROKER_TRANSPORT_OPTIONS`` and
    ``RESULT_BACKEND_TRANSPORT_OPTIONS``.

    Raises ``ValueError`` saying what to set for a combination that cannot
    work: a broker other than Redis, Sentinel or RabbitMQ, a Sentinel url
    without ``master_name``, RabbitMQ without a Redis for the results (which
    also keeps the debounce keys and the push channels), a ``global_keyprefix``
    (the ledger reads kombu's keys as they are).
    """
    broker_options, backend_options = dict(broker_options or {}), dict(backend_options or {})
    kind = broker_kind(broker_url)
    if kind is None:
        raise ValueError(
            f"BROKER_URL={_masked(broker_url)} is not a broker this package supports: "
            "use redis://, rediss://, unix://, sentinel://host:port;sentinel://host:port "
            "(Redis Sentinel) or amqp:// (RabbitMQ)"
        )
    if not result_backend:
        if kind != "redis":
            raise ValueError(
                f"BROKER_URL={_masked(broker_url)} is RabbitMQ, which keeps no results, "
                "debounce keys or push channels: set CELERY_RESULT_BACKEND to a Redis, "
                "redis://host:6379/0 or sentinel://host:26379;sentinel://... with "
                "RESULT_BACKEND_TRANSPORT_OPTIONS"
            )
        result_backend = broker_url
    if result_backend == broker_url:
        # the results live in the broker: reach them the same way
        backend_options = {
            **{key: broker_options[key] for key in SENTINEL_OPTIONS if key in broker_options},
            **backend_options,
        }
    if kind == "amqp" and broker_kind(result_backend) != "redis":
        raise ValueError(
            f"with RabbitMQ (BROKER_URL={_masked(broker_url)}) debounced jobs, such as the "
            "previews of every upload, and push keep their keys in the Redis of the "
            f"results, and CELERY_RESULT_BACKEND={_masked(result_backend)} is not one: set "
            "it to redis://host:6379/0 or to a sentinel:// url"
        )
    _check_sentinel(broker_url, broker_options, "BROKER_TRANSPORT_OPTIONS")
    _check_sentinel(result_backend, backend_options, "RESULT_BACKEND_TRANSPORT_OPTIONS")
    if kind == "redis" and broker_options.get("global_keyprefix"):
        raise ValueError(
            "BROKER_TRANSPORT_OPTIONS has a global_keyprefix, and the ledger of lost "
            "jobs reads kombu's Redis keys without one: give this site a Redis "
            "database of its own (redis://host:6379/N) instead"
        )
    if amqp_queue_type not in AMQP_QUEUE_TYPES:
        raise ValueError(
            f"environment variable ASYNC_AMQP_QUEUE_TYPE={amqp_queue_type!r} is not "
            "quorum or classic: use quorum (recommended) or classic"
        )
    if kind == "redis":
        defaults = {
            "visibility_timeout": _env_number("ASYNC_VISIBILITY_TIMEOUT", 3600, int),
            # kombu looks for the jobs of lost workers only every 10th sweep
            # (every 100 s); look at every sweep, so they return at most 10 s
            # after the timeout.
            "unacked_restore_throttle": 1,
        }
        queue_arguments, exchange_type = None, "direct"
    else:
        # each publish waits for RabbitMQ's confirm: a refused one raises
        defaults = {"confirm_publish": True}
        queue_arguments = {"x-queue-type": amqp_queue_type}
        # Celery's native delayed delivery routes by topic; direct exchanges
        # would make the worker hold every delayed job until it is due
        exchange_type = "topic"
    queues = [
        Queue(name, Exchange(name, type=exchange_type), routing_key=name, queue_arguments=queue_arguments)
        for name in ASYNC_QUEUES
    ]
    return {
        "broker_url": broker_url,
        "result_backend": result_backend,
        "broker_transport_options": {**defaults, **broker_options},
        "result_backend_transport_options": backend_options,
        # Routing. Declaring every queue makes a worker without -Q consume them all.
        "task_queues": queues,
        "task_default_exchange_type": exchange_type,
        "task_default_queue_type": amqp_queue_type if kind == "amqp" else "classic",
        "task_create_missing_queue_type": amqp_queue_type if kind == "amqp" else "classic",
        "task_create_missing_queue_exchange_type": exchange_type if kind == "amqp" else None,
    }


# RabbitMQ only. A worker holding an unacknowledged job longer than this is
# disconnected by RabbitMQ, and the job handed out again.
ASYNC_AMQP_QUEUE_TYPE = (os.environ.get("ASYNC_AMQP_QUEUE_TYPE") or "quorum").strip().lower()
ASYNC_AMQP_CONSUMER_TIMEOUT = _env_number("ASYNC_AMQP_CONSUMER_TIMEOUT", 1800.0)
# Redis only: replicas that must hold a transaction's jobs before Plone goes on.
ASYNC_REDIS_WAIT_REPLICAS = _env_number("ASYNC_REDIS_WAIT_REPLICAS", 0, int)
ASYNC_REDIS_WAIT_TIMEOUT = _env_number("ASYNC_REDIS_WAIT_TIMEOUT", 1.0)
# Sentinel only: how long a committed transaction's jobs wait for a new master.
ASYNC_SENTINEL_FAILOVER_WAIT = _env_number("ASYNC_SENTINEL_FAILOVER_WAIT", 60.0)

# (not kept under their own names: Celery would take BROKER_TRANSPORT_OPTIONS
# for its old name of broker_transport_options)
_broker = broker_settings(
    os.environ.get("BROKER_URL") or "redis://localhost:6379/0",
    os.environ.get("CELERY_RESULT_BACKEND") or None,
    _env_json_object("BROKER_TRANSPORT_OPTIONS"),
    _env_json_object("RESULT_BACKEND_TRANSPORT_OPTIONS"),
    ASYNC_AMQP_QUEUE_TYPE,
)
if broker_kind(_broker["broker_url"]) == "amqp" and ASYNC_READ_TIMEOUT >= ASYNC_AMQP_CONSUMER_TIMEOUT:
    raise ValueError(
        f"ASYNC_READ_TIMEOUT={ASYNC_READ_TIMEOUT:g} lets a job run as long as RabbitMQ's "
        f"consumer_timeout ({ASYNC_AMQP_CONSUMER_TIMEOUT:g} s, ASYNC_AMQP_CONSUMER_TIMEOUT), "
        "after which RabbitMQ hands the job out again while it runs: lower "
        "ASYNC_READ_TIMEOUT, or raise consumer_timeout in rabbitmq.conf and "
        "ASYNC_AMQP_CONSUMER_TIMEOUT with it"
    )

#: The Redis of the push channels and its transport options (a Sentinel master).
ASYNC_PUSH_REDIS_URL = os.environ.get("ASYNC_PUSH_REDIS_URL") or (
    _broker["broker_url"] if broker_kind(_broker["broker_url"]) == "redis" else _broker["result_backend"]
)
ASYNC_PUSH_REDIS_OPTIONS = _env_json_object("ASYNC_PUSH_REDIS_OPTIONS") or (
    _broker["broker_transport_options"]
    if ASYNC_PUSH_REDIS_URL == _broker["broker_url"]
    else _broker["result_backend_transport_options"]
    if ASYNC_PUSH_REDIS_URL == _broker["result_backend"]
    else {}
)
_check_sentinel(ASYNC_PUSH_REDIS_URL, ASYNC_PUSH_REDIS_OPTIONS, "ASYNC_PUSH_REDIS_OPTIONS")

# --- Celery settings ---------------------------------------------------------

broker_url = _broker["broker_url"]
result_backend = _broker["result_backend"]
broker_transport_options = _broker["broker_transport_options"]
result_backend_transport_options = _broker["result_backend_transport_options"]

# JSON only: a pickled message from a compromised broker would run code.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]

task_always_eager = not ASYNC_ENABLED
task_eager_propagates = True

# A job is acknowledged when it is done, not when it is taken, so a worker
# killed in the middle leaves it on the queue for another worker.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1

broker_connection_retry_on_startup = True
result_expires = _env_number("ASYNC_RESULT_EXPIRES", 3600, int)

enable_utc = True
timezone = "UTC"

task_default_queue = DEFAULT_QUEUE
task_routes = {task: {"queue": queue} for task, queue in ASYNC_TASK_ROUTES.items()}
task_queues = _broker["task_queues"]
task_default_exchange_type = _broker["task_default_exchange_type"]
task_default_queue_type = _broker["task_default_queue_type"]
task_create_missing_queue_type = _broker["task_create_missing_queue_type"]
task_create_missing_queue_exchange_type = _broker["task_create_missing_queue_exchange_type"]
