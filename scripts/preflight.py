"""Checks made before ``make run`` and ``make run-zeo`` start anything.

Each check either returns what was found or raises
:class:`~supervise.DevServerError` with a message that says what to do.
"""

import os
from ploneintranet.asynctasks.wire import masked_url
import shutil
import socket
from supervise import DevServerError


DEFAULT_PORT = 8080
DEFAULT_BROKER_URL = "redis://localhost:6379/0"
DEFAULT_REDIS_PORT = 6379


# --- ports -------------------------------------------------------------------


def http_port(command, span=0):
    """Return the port of env ``PORT`` (default 8080); ``make run-zeo`` also
    uses the ``span`` ports after it."""
    value = os.environ.get("PORT", "").strip() or str(DEFAULT_PORT)
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535 - span:
        raise DevServerError(
            f"PORT={value!r} is not a TCP port: use a number such as 8080, e.g. `make {command} PORT=8090`"
        )
    return port


def port_in_use(port):
    """Can nothing listen on 127.0.0.1:port, or does localhost:port answer?"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    # Something listening on ::1 only would get the browser's "localhost".
    try:
        infos = socket.getaddrinfo("localhost", port, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as s:
            s.settimeout(0.5)
            if s.connect_ex(address) == 0:
                return True
    return False


def require_free_ports(command, ports):
    """Raise if a port of ``{role: port}`` is in use; ``PORT`` is the first."""
    base = next(iter(ports.values()))
    for role, port in ports.items():
        if port_in_use(port):
            raise DevServerError(
                f"port {port} ({role}) is already in use. Stop the program that "
                f"uses it, or move everything to other ports: "
                f"`make {command} PORT={base + 10}`"
            )


def free_port(preferred):
    """Return ``preferred`` if nothing uses it on 127.0.0.1, else a free port."""
    if not port_in_use(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- Redis ---------------------------------------------------------------------


def redis_answers(url):
    """Return ``None`` if a Redis answers PING at ``url``, else why not."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
        return f"no answer ({e})"
    except redis.exceptions.RedisError as e:
        raise DevServerError(
            f"the Redis at {url} answers but refuses us: {e}. Fix BROKER_URL (password, database number) and try again"
        ) from None
    except ValueError as e:
        raise DevServerError(
            f"BROKER_URL={url!r} is not a Redis url ({e}): use one such as {DEFAULT_BROKER_URL}"
        ) from None
    return None


def _broker_environment(url, autostart=False, port=DEFAULT_REDIS_PORT):
    return {
        "BROKER_URL": url,
        "CELERY_RESULT_BACKEND": os.environ.get("CELERY_RESULT_BACKEND", "").strip() or url,
        "DEVSERVER_REDIS_AUTOSTART": "true" if autostart else "false",
        "DEVSERVER_REDIS_PORT": str(port),
        "DEVSERVER_REDIS_SERVER": shutil.which("redis-server") or "redis-server",
    }


def choose_broker():
    """For ``make run``: return ``(environment, description)`` of the broker.

    The Redis that answers at ``BROKER_URL`` (default localhost:6379), else,
    when ``BROKER_URL`` is not set, a private redis-server under supervisor.
    """
    named = os.environ.get("BROKER_URL", "").strip()
    url = named or DEFAULT_BROKER_URL
    problem = redis_answers(url)
    if problem is None:
        return _broker_environment(url), f"{masked_url(url)} (a Redis that was already running)"
    if named:
        raise DevServerError(
            f"BROKER_URL={masked_url(named)} gives {masked_url(problem)}. Start that Redis, or unset "
            "BROKER_URL so that `make run` uses the one on localhost:6379 or "
            "starts its own"
        )
    if shutil.which("redis-server") is None:
        raise DevServerError(
            f"no Redis answers at {masked_url(url)} and redis-server is not installed: "
            "run `sudo apt-get install redis-server` (Debian/Ubuntu) or "
            "start a Redis and set BROKER_URL to it, then try again"
        )
    port = free_port(DEFAULT_REDIS_PORT)
    url = f"redis://127.0.0.1:{port}/0"
    env = _broker_environment(url, autostart=True, port=port)
    return env, f"{url} (a private redis-server, data in var/redis/)"


def require_system_redis():
    """For ``make run-zeo``: return ``(environment, description)`` of the
    Redis that answers at ``BROKER_URL``; raise if none does."""
    url = os.environ.get("BROKER_URL", "").strip() or DEFAULT_BROKER_URL
    problem = redis_answers(url)
    if problem is not None:
        raise DevServerError(
            f"no Redis answers at {url}: {problem}. Like a production server, "
            "`make run-zeo` uses Redis as a service of the system: install it "
            "with `sudo apt-get install redis-server` (Debian/Ubuntu starts "
            "it), or start your Redis and set BROKER_URL to it"
        )
    return _broker_environment(url), url


# --- programs and settings of make run-zeo ---------------------------------


def require_haproxy():
    """Return the path of the haproxy executable."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if found is None:
        raise DevServerError(
            "haproxy is not installed: run `sudo apt-get install haproxy` "
            "(Debian/Ubuntu; `make run-zeo` does it when run as root)"
        )
    return found


def require_consumed_queues(consumed):
    """Raise if ``ASYNC_TASK_ROUTES`` puts jobs in a queue that none of the
    Celery workers of supervisor.cfg consumes (``consumed``)."""
    from ploneintranet.asynctasks import celeryconfig

    missing = [queue for queue in celeryconfig.ASYNC_QUEUES if queue not in consumed]
    if missing:
        raise DevServerError(
            f"ASYNC_TASK_ROUTES puts jobs in the queue(s) {', '.join(missing)}, "
            f"but the Celery workers of supervisor.cfg consume only "
            f"{', '.join(consumed)}: their jobs would wait forever. Route to "
            "those queues, or add a [program:celery-...] for the new queue"
        )


def flower_installed():
    try:
        import flower  # noqa: F401
    except ImportError:
        return False
    return True
