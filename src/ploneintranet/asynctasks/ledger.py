"""The ledger: every job sent and not yet done, so that none is lost.

Celery's Redis transport pops a message off its queue before it records it as
taken (``unacked``): a worker killed in between loses it (see
:doc:`/reliability`). So each job is written here before it is sent, and
crossed out when finished. A sweep (every ``ASYNC_SWEEP_INTERVAL`` seconds, one
worker at a time) looks atomically inside Redis for the due jobs among the
taken ones and in their queue; a queue is read message by message only for a
job sent before its oldest waiting message (queues are first in, first out).
A job found nowhere on two sweeps in a row is sent again with its task id, at
most :data:`MAX_RESENDS` times, then logged as ``LOST JOB``. Entries hold the
job's arguments (its credentials too), in the broker's Redis, as the message.
"""

from datetime import datetime
from datetime import timedelta
from datetime import timezone
import json
from kombu.transport.redis import PRIORITY_STEPS
from kombu.transport.redis import Channel
import logging
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks.broker import is_redis
from ploneintranet.asynctasks.broker import redis_client
import time


logger = logging.getLogger("ploneintranet.asynctasks")

PREFIX = "ploneintranet.asynctasks:ledger"
#: task id -> the job as JSON (task name, arguments, options)
JOBS = PREFIX
#: task id -> how many times the sweep sent it again
RESENDS = PREFIX + ":resends"
#: task id -> when the sweep looks for the job next
DUE = PREFIX + ":due"
#: task id -> when a sweep first found the job missing
MISSING = PREFIX + ":missing"
#: task id -> when it was sent and to which queue: ``"<time>\t<queue>"``
SENT = PREFIX + ":sent"
#: the names of the queues jobs in the ledger were sent to
QUEUES = PREFIX + ":queues"
#: held by the worker that sweeps, for one interval
SWEEPING = PREFIX + ":sweeping"

#: Times a lost job is sent again before it is given up and logged.
MAX_RESENDS = 3
#: Jobs one sweep looks at, oldest first.
SWEEP_LIMIT = 1000
#: A sweep reads a queue message by message up to this length (10,000
#: messages of a Plone job take Redis about 75 ms); while the queue of a
#: missing job is longer, that job is not sent again.
LONGEST_QUEUE_READ = 20_000

# Within Redis, atomically: which jobs due for a look are neither taken by a
# worker nor waiting in their queue, and were not on the previous sweep either.
# KEYS: DUE, MISSING, SENT, JOBS, unacked, then the lists of each queue (kombu
# keeps a queue's messages of each priority step in a list of its own);
# ARGV: now, interval, limit, longest queue read, lists per queue, the queues.
_SWEEP = """
local now, interval = tonumber(ARGV[1]), tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
if #due == 0 then return {} end
local per_queue, lists, taken, oldest, waiting, lost = tonumber(ARGV[5]), {}, {}, {}, {}, {}
for i = 6, #ARGV do
  lists[ARGV[i]] = {unpack(KEYS, 6 + (i - 6) * per_queue, 5 + (i - 5) * per_queue)}
end
-- a message in a queue is kombu's envelope; in unacked, [envelope, exchange, key]
local function id_of(raw)
  local ok, message = pcall(cjson.decode, raw)
  if not ok or type(message) ~= 'table' then return nil end
  if type(message[1]) == 'table' then message = message[1] end
  return type(message.headers) == 'table' and message.headers.id or nil
end
local function sent_of(id)
  local sent = id and redis.call('HGET', KEYS[3], id)
  if not sent then return nil, nil end
  local time, queue = string.match(sent, '^([^\t]*)\t(.*)$')
  return tonumber(time), queue
end
for _, raw in ipairs(redis.call('HVALS', KEYS[5])) do taken[id_of(raw) or ''] = true end
-- when the oldest message waiting in a queue was sent: false if the queue is
-- empty, -1 if that is not known (a message the ledger does not hold)
local function oldest_of(queue)
  if oldest[queue] == nil then
    oldest[queue] = false
    for _, list in ipairs(lists[queue]) do
      local raw = redis.call('LINDEX', list, -1)
      local time = raw and (sent_of(id_of(raw)) or -1)
      if time and oldest[queue] ~= -1 and (time == -1 or not oldest[queue] or time < oldest[queue]) then
        oldest[queue] = time
      end
    end
  end
  return oldest[queue]
end
-- the ids waiting in a queue, read message by message; false if too long
local function waiting_in(queue)
  if waiting[queue] == nil then
    local length = 0
    for _, list in ipairs(lists[queue]) do length = length + redis.call('LLEN', list) end
    waiting[queue] = length <= tonumber(ARGV[4]) and {}
    for _, list in ipairs(waiting[queue] and lists[queue] or {}) do
      for _, raw in ipairs(redis.call('LRANGE', list, 0, -1)) do waiting[queue][id_of(raw) or ''] = true end
    end
  end
  return waiting[queue]
end
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], now + interval, id)
  local found = taken[id]
  if not found then
    local time, queue = sent_of(id)
    local first = lists[queue or ''] and oldest_of(queue)
    if first == nil or (first ~= false and first ~= -1 and first <= time) then
      found = true  -- finished meanwhile, not ours to judge, or maybe behind the oldest
    elseif first ~= false then
      local ids = waiting_in(queue)
      found = (ids == false) or ids[id]
    end
  end
  local since = tonumber(redis.call('HGET', KEYS[2], id))
  if found then
    redis.call('HDEL', KEYS[2], id)
  elseif since and now - since >= interval * 0.9 then
    redis.call('HDEL', KEYS[2], id)
    table.insert(lost, id)
  elseif not since then
    redis.call('HSET', KEYS[2], id, now)
  end
end
return lost
"""
_scripts = {}


def keeps_ledger(app):
    """True if jobs of ``app`` are kept in the ledger: a Redis broker, not eager."""
    return not app.conf.task_always_eager and is_redis(app.conf.broker_url)


def _entry(job, now):
    """The ledger's JSON of one job: what it takes to send it again."""
    options = job.options
    kept = {name: options[name] for name in ("queue", "priority", "routing_key") if options.get(name) is not None}
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
    return json.dumps({"task": job.task.name, "args": list(job.args), "options": kept})


def add_to(pipe, app, jobs, routes=None):
    """Add to the Redis pipeline ``pipe`` the commands that write ``jobs``
    (:class:`~ploneintranet.asynctasks.delivery.Job`) into the ledger, to be
    sent before the jobs themselves. Only jobs of tasks with a true
    ``ledgered`` attribute (those built on
    :class:`~ploneintranet.asynctasks.celerytasks.JobTask`, which cross their
    jobs out when finished) are written. A job already there (a retry, or
    sent again by the sweep) gets its entry anew and keeps its count of
    resends. ``routes`` caches :func:`queue_of`."""
    now = time.time()
    due = now + celeryconfig.ASYNC_SWEEP_INTERVAL
    routes = {} if routes is None else routes
    entries, sent = {}, {}
    for job in jobs:
        if not getattr(job.task, "ledgered", False):
            continue  # nothing would cross it out when it is finished
        entries[job.id] = _entry(job, now)
        sent[job.id] = f"{now!r}\t{queue_of(app, job, routes).name}"
    if sent:
        pipe.hset(JOBS, mapping=entries)
        pipe.hset(SENT, mapping=sent)
        pipe.zadd(DUE, dict.fromkeys(sent, due))
        pipe.sadd(QUEUES, *{queue.name for queue in routes.values()})


def queue_of(app, job, routes):
    """The queue (a kombu ``Queue``) Celery's router gives ``job``; looked
    up once per task and ``queue`` option, kept in the dict ``routes``."""
    key = (job.task.name, job.options.get("queue"))
    if key not in routes:
        asked = {"queue": job.options["queue"]} if job.options.get("queue") else {}
        routes[key] = app.amqp.router.route(asked, job.task.name, job.args, {}, job.task)["queue"]
    return routes[key]


def forget(app, *task_ids):
    """Cross finished jobs out of the ledger, in one round trip."""
    if not keeps_ledger(app) or not task_ids:
        return
    try:
        pipe = redis_client(app).pipeline(transaction=False)
        pipe.hdel(JOBS, *task_ids).hdel(SENT, *task_ids).hdel(RESENDS, *task_ids)
        pipe.zrem(DUE, *task_ids).hdel(MISSING, *task_ids)
        pipe.execute()
    except Exception as error:
        # it would be sent again only if it also vanished from the queues
        logger.warning(
            "could not cross job(s) %s out of the ledger (%s: %s)",
            ", ".join(task_ids),
            type(error).__name__,
            error,
        )


def summary(app):
    """``(jobs, missing)``: how many jobs are in the ledger (sent and not
    finished), and how many of them a sweep found neither waiting nor taken."""
    client = redis_client(app, needed_for="the ledger")
    pipe = client.pipeline(transaction=False)
    jobs, missing = pipe.hlen(JOBS).hlen(MISSING).execute()
    return jobs, missing


def sweep(app, hostname="worker"):
    """Send again the jobs that a worker lost; return their task ids.

    One worker at a time sweeps (a lock held for one interval); the others
    return at once.
    """
    interval = celeryconfig.ASYNC_SWEEP_INTERVAL
    client = redis_client(app)
    if not client.set(SWEEPING, hostname, nx=True, px=int(interval * 900)):
        return []
    if client not in _scripts:
        _scripts[client] = client.register_script(_SWEEP)
    queues = sorted(name.decode() for name in client.smembers(QUEUES))
    unacked = (app.conf.broker_transport_options or {}).get("unacked_key", "unacked")
    keys = [DUE, MISSING, SENT, JOBS, unacked]
    for queue in queues:
        keys += [f"{queue}{Channel.sep}{step}" if step else queue for step in PRIORITY_STEPS]
    lost = _scripts[client](
        keys=keys, args=[time.time(), interval, SWEEP_LIMIT, LONGEST_QUEUE_READ, len(PRIORITY_STEPS), *queues]
    )
    return [task_id.decode() for task_id in lost if _resend(app, client, task_id.decode())]


def _resend(app, client, task_id):
    raw = client.hget(JOBS, task_id)
    if raw is None:
        return False  # finished meanwhile
    job = json.loads(raw)
    url = job["args"][0] if job["args"] else "?"
    resends = client.hincrby(RESENDS, task_id, 1)
    if resends > MAX_RESENDS:
        logger.error(
            "LOST JOB: %s[%s] for %s vanished from the queues %d times; given up",
            job["task"],
            task_id,
            url,
            resends,
        )
        forget(app, task_id)
        return False
    task = app.tasks.get(job["task"])
    if task is None:
        logger.error(
            "LOST JOB: %s[%s] for %s vanished from the queues, and this worker "
            "does not know its task, so it cannot send it again",
            job["task"],
            task_id,
            url,
        )
        return False
    options = dict(job["options"])
    for name in ("eta", "expires"):
        if name in options:
            options[name] = datetime.fromisoformat(options[name])
    logger.warning(
        "%s[%s] for %s vanished from the queues (a worker died while taking it): sent again (%d of %d)",
        job["task"],
        task_id,
        url,
        resends,
        MAX_RESENDS,
    )
    # through the task's own road, so its ledger entry says when it was sent
    task.apply_async(job["args"], task_id=task_id, **options)
    return True
