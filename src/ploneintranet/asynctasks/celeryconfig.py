"""Every setting of ploneintranet.asynctasks, read from the environment.

Celery reads the lowercase names of this module (``broker_url``, ...) through
``app.config_from_object``. Our own settings for sending jobs are the
uppercase ``ASYNC_*`` names; :mod:`ploneintranet.asynctasks.core` reads them
from here too, so there is one place to look.

The same environment must be given to the Plone instances and to the Celery
worker, since both ends talk to the same broker.

=============================  ======================================  ===========================================
variable                       default                                 meaning
=============================  ======================================  ===========================================
``BROKER_URL``                 ``redis://localhost:6379/0``            Celery broker (Redis)
``CELERY_RESULT_BACKEND``      the broker url                          where task results are kept
``ASYNC_ENABLED``              ``true``                                ``false`` runs jobs eagerly, see below
``ASYNC_CONNECT_TIMEOUT``      ``5``                                   seconds to connect to Plone
``ASYNC_READ_TIMEOUT``         ``300``                                 seconds to wait for Plone's answer
``ASYNC_MAX_RETRIES``          ``6``                                   retries of a job that failed for a
                                                                       reason that may pass (5xx, timeout, ...)
``ASYNC_RETRY_BACKOFF_MAX``    ``600``                                 longest wait between two retries, seconds
``ASYNC_VISIBILITY_TIMEOUT``   ``3600``                                seconds before Redis redelivers a job
                                                                       that a worker took but did not finish
``ASYNC_RESULT_EXPIRES``       ``3600``                                seconds task results are kept
``ASYNC_ALLOWED_ORIGINS``      (none: any http(s) origin)              comma-separated origins the worker may
                                                                       send jobs to, e.g. ``https://example.com``
``ASYNC_MAX_JOB_BYTES``        ``1000000``                             largest job, as JSON, Plone will enqueue
=============================  ======================================  ===========================================

``ASYNC_ENABLED=false`` is for development without a worker: Celery runs each
task in the process that enqueues it (``task_always_eager``). The job is still
an HTTP POST to Plone, sent when the user's transaction commits, from the
thread that served the user, so the user waits for it and the instance needs a
second free thread (waitress has four by default) to answer it. Retries,
countdowns and routing do not apply. Never use it in production.
"""

import os


def _env_flag(name, default):
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    value = value.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(
        f"environment variable {name}={value!r} is not a boolean: "
        "use true or false"
    )


def _env_number(name, default, kind=float):
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        number = kind(value)
    except ValueError:
        raise ValueError(
            f"environment variable {name}={value!r} is not a number: "
            f"use a {kind.__name__} such as {default}"
        ) from None
    if number < 0:
        raise ValueError(
            f"environment variable {name}={value!r} is negative: "
            f"use a value such as {default}"
        )
    return number


# --- ploneintranet.asynctasks' own settings --------------------------------

ASYNC_ENABLED = _env_flag("ASYNC_ENABLED", True)
ASYNC_CONNECT_TIMEOUT = _env_number("ASYNC_CONNECT_TIMEOUT", 5.0)
ASYNC_READ_TIMEOUT = _env_number("ASYNC_READ_TIMEOUT", 300.0)
ASYNC_MAX_RETRIES = _env_number("ASYNC_MAX_RETRIES", 6, int)
ASYNC_RETRY_BACKOFF_MAX = _env_number("ASYNC_RETRY_BACKOFF_MAX", 600, int)
ASYNC_MAX_JOB_BYTES = _env_number("ASYNC_MAX_JOB_BYTES", 1_000_000, int)
# Plone only sends jobs to its own origin; this is the worker's second check.
ASYNC_ALLOWED_ORIGINS = [
    value.strip().rstrip("/").lower()
    for value in os.environ.get("ASYNC_ALLOWED_ORIGINS", "").split(",")
    if value.strip()
]

# --- Celery settings ---------------------------------------------------------

broker_url = os.environ.get("BROKER_URL") or "redis://localhost:6379/0"
result_backend = os.environ.get("CELERY_RESULT_BACKEND") or broker_url

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

broker_transport_options = {
    "visibility_timeout": _env_number("ASYNC_VISIBILITY_TIMEOUT", 3600, int),
}
broker_connection_retry_on_startup = True
result_expires = _env_number("ASYNC_RESULT_EXPIRES", 3600, int)

enable_utc = True
timezone = "UTC"
