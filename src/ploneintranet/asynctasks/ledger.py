"""The ledger: every job sent and not yet done, so that none is lost.

Celery's Redis transport takes a message off its queue (``BRPOP``) and only
then records it as taken (the ``unacked`` hash, from which Redis hands it out
again after the visibility timeout). A worker killed between the two (SIGKILL,
out of memory, a crash) loses that message: no queue, no ``unacked`` entry,
no retry. The same gap exists while kombu hands a message back. Measured
here: 6 of 20,000 jobs lost over 25 SIGKILLs of a busy worker.

So the sender writes each job into the ledger before publishing it (one
round trip for all jobs of a transaction), and the worker crosses it out when
the job is finished (succeeded, refused, failed for good, superseded or
expired). A sweep in the worker (:class:`LedgerSweep`, every
``ASYNC_SWEEP_INTERVAL`` seconds, one worker at a time) looks, inside Redis
and atomically, for the ledger's jobs in the queues and in ``unacked``. A job
found in neither on two sweeps in a row is lost: it is sent again with its
task id. Jobs stay at-least-once (see :doc:`/reliability`); a job sent again
more than :data:`MAX_RESENDS` times is logged as ``LOST JOB`` and dropped.

The ledger holds the same arguments as the message itself (the job's
credentials included), in the broker's Redis, for as long as the message.
"""

from datetime import datetime
from datetime import timedelta
from datetime import timezone
import json
import logging
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks.broker import is_redis
from ploneintranet.asynctasks.broker import redis_client
import threading
import time


logger = logging.getLogger("ploneintranet.asynctasks")

PREFIX = "ploneintranet.asynctasks:ledger"
#: task id -> the job as JSON (task name, arguments, options, resends)
JOBS = PREFIX
#: task id -> when the sweep looks for the job next
DUE = PREFIX + ":due"
#: task id -> when a sweep first found the job missing
MISSING = PREFIX + ":missing"
#: names of the queues jobs were sent to by name (``queue=...``)
QUEUES = PREFIX + ":queues"
#: held by the worker that sweeps, for one interval
SWEEPING = PREFIX + ":sweeping"

#: Times a lost job is sent again before it is given up and logged.
MAX_RESENDS = 3
#: Jobs one sweep looks at, oldest first.
SWEEP_LIMIT = 1000
#: A sweep reads queues up to this length (about 50 ms of Redis's time);
#: while one is longer, it sends nothing again.
LONGEST_QUEUE_READ = 50_000

# kombu keeps a queue's messages of priority 3, 6, 9 in lists of their own.
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")

_local = threading.local()

# Within Redis, atomically: which jobs due for a look are neither in a queue
# nor taken by a worker, and were not on the previous sweep either.
# KEYS: DUE, MISSING, unacked hash, queue lists...;
# ARGV: now, interval, limit, longest queue read
_SWEEP = """
local now, interval = tonumber(ARGV[1]), tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
if #due == 0 then return {} end
local wanted, present = {}, {}
for _, id in ipairs(due) do wanted[id] = true end
local function look(message)
  local id = string.match(message, '"id": *"([^"]+)"')
  if id and wanted[id] then present[id] = true end
end
for _, message in ipairs(redis.call('HVALS', KEYS[3])) do look(message) end
local unsure = false
for i = 4, #KEYS do
  if redis.call('LLEN', KEYS[i]) > tonumber(ARGV[4]) then
    unsure = true  -- too long to read now; look again when it is shorter
  else
    for _, message in ipairs(redis.call('LRANGE', KEYS[i], 0, -1)) do look(message) end
  end
end
local lost = {}
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], now + interval, id)
  if present[id] or unsure then
    redis.call('HDEL', KEYS[2], id)
  else
    local since = tonumber(redis.call('HGET', KEYS[2], id))
    if since and now - since >= interval * 0.9 then
      redis.call('HDEL', KEYS[2], id)
      table.insert(lost, id)
    elseif not since then
      redis.call('HSET', KEYS[2], id, now)
    end
  end
end
return lost
"""


def _keeps_ledger(app):
    return not app.conf.task_always_eager and is_redis(app.conf.broker_url)


def _entry(task, args, options, now):
    """The ledger's JSON of one job: what it takes to send it again."""
    kept = {}
    for name in ("queue", "priority", "routing_key"):
        if options.get(name) is not None:
            kept[name] = options[name]
    eta = options.get("eta")
    if eta is None and options.get("countdown"):
        eta = datetime.fromtimestamp(now, timezone.utc) + timedelta(seconds=options["countdown"])
    if eta is not None:
        kept["eta"] = eta.isoformat()
    expires = options.get("expires")
    if isinstance(expires, (int, float)):
        expires = datetime.fromtimestamp(now, timezone.utc) + timedelta(seconds=expires)
    if expires is not None:
        kept["expires"] = expires.isoformat()
    return json.dumps({"task": task.name, "args": list(args), "options": kept, "resends": 0})


def record(app, jobs):
    """Write ``jobs`` ((task, args, options) with ``options["task_id"]``) into
    the ledger in one round trip, before they are published.

    A failure is logged, not raised: the ledger is a safety net, and the
    publish that follows reports a broker that is down.
    """
    if not jobs or not _keeps_ledger(app):
        return
    try:
        pipe = redis_client(app).pipeline(transaction=False)
        add_to(pipe, jobs)
        pipe.execute()
    except Exception as error:
        logger.warning(
            "could not write %d job(s) into the ledger (%s: %s): they are sent, "
            "but would not be sent again if a worker lost them",
            len(jobs), type(error).__name__, error,
        )


def add_to(pipe, jobs):
    """Add the commands that write ``jobs`` into the ledger to the Redis
    pipeline ``pipe``, for a caller that sends the jobs in the same round
    trip."""
    now = time.time()
    due = now + celeryconfig.ASYNC_SWEEP_INTERVAL
    entries = {}
    queues = set()
    for task, args, options in jobs:
        entries[options["task_id"]] = _entry(task, args, options, now)
        if isinstance(options.get("queue"), str):
            queues.add(options["queue"])
    pipe.hset(JOBS, mapping=entries)
    pipe.zadd(DUE, dict.fromkeys(entries, due))
    if queues:
        pipe.sadd(QUEUES, *queues)


class recorded:
    """Context manager: the jobs published inside it are in the ledger
    already, so :meth:`JobTask.apply_async` does not write them again."""

    def __enter__(self):
        _local.recorded = True
        return self

    def __exit__(self, *exc):
        _local.recorded = False


def is_recorded():
    """True inside :class:`recorded`."""
    return getattr(_local, "recorded", False)


def forget(app, task_id):
    """Cross a finished job out of the ledger."""
    if not _keeps_ledger(app):
        return
    try:
        pipe = redis_client(app).pipeline(transaction=False)
        pipe.hdel(JOBS, task_id).zrem(DUE, task_id).hdel(MISSING, task_id)
        pipe.execute()
    except Exception as error:
        # it would be sent again only if it also vanished from the queues
        logger.warning(
            "could not cross job %s out of the ledger (%s: %s)",
            task_id, type(error).__name__, error,
        )


def _queue_keys(app, client):
    """The lists a job may wait in: the configured queues, and those that
    jobs were sent to by name."""
    names = {queue.name for queue in app.conf.task_queues or ()}
    names.add(app.conf.task_default_queue)
    names.update(name.decode() for name in client.smembers(QUEUES))
    return [name + suffix for name in sorted(names) for suffix in _PRIORITY_SUFFIXES]


def sweep(app, hostname="worker"):
    """Send again the jobs that a worker lost; return their task ids.

    One worker at a time sweeps (a lock held for one interval); the others
    return at once.
    """
    interval = celeryconfig.ASYNC_SWEEP_INTERVAL
    client = redis_client(app)
    if not client.set(SWEEPING, hostname, nx=True, px=int(interval * 900)):
        return []
    unacked = (app.conf.broker_transport_options or {}).get("unacked_key", "unacked")
    keys = [DUE, MISSING, unacked] + _queue_keys(app, client)
    lost = client.eval(
        _SWEEP, len(keys), *keys, time.time(), interval, SWEEP_LIMIT, LONGEST_QUEUE_READ
    )
    resent = []
    for raw_id in lost:
        task_id = raw_id.decode()
        if _resend(app, client, task_id):
            resent.append(task_id)
    return resent


def _resend(app, client, task_id):
    raw = client.hget(JOBS, task_id)
    if raw is None:
        return False  # finished meanwhile
    job = json.loads(raw)
    url = job["args"][0] if job["args"] else "?"
    if job["resends"] >= MAX_RESENDS:
        logger.error(
            "LOST JOB: %s[%s] for %s vanished from the queues %d times; given up",
            job["task"], task_id, url, job["resends"] + 1,
        )
        forget(app, task_id)
        return False
    task = app.tasks.get(job["task"])
    if task is None:
        logger.error(
            "LOST JOB: %s[%s] for %s vanished from the queues, and this worker "
            "does not know its task, so it cannot send it again",
            job["task"], task_id, url,
        )
        return False
    job["resends"] += 1
    client.hset(JOBS, task_id, json.dumps(job))
    options = dict(job["options"])
    for name in ("eta", "expires"):
        if name in options:
            options[name] = datetime.fromisoformat(options[name])
    logger.warning(
        "%s[%s] for %s vanished from the queues (a worker died while taking "
        "it): sent again (%d of %d)",
        job["task"], task_id, url, job["resends"], MAX_RESENDS,
    )
    with recorded():
        task.apply_async(job["args"], task_id=task_id, **options)
    return True
