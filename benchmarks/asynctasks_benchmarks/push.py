"""Benchmark of the push server: one process holding many open sockets.

::

    .venv/bin/python -m asynctasks_benchmarks.push
        [--sockets 1000] [--messages 2000] [--rate 200] [--json var/bench-push.json]

Starts a private redis-server and the push server as its own process, opens
``--sockets`` websockets, each as a different user, then publishes
``--messages`` messages to random users at ``--rate`` per second and reports
the latency from publish to delivery (p50, p99, max), the messages lost, the
time to open the sockets and the push server's memory. Plone is replaced by a
stand-in for ``@@async-push-user`` that answers the user named in the cookie:
the figure is about the push path, not about Plone's login.
"""

import argparse
import asyncio
from asynctasks_benchmarks.measure import percentile
import json
from pathlib import Path
from ploneintranet.asynctasks.push.messages import channel
from ploneintranet.asynctasks.testing import free_port
from ploneintranet.asynctasks.testing import start_push_server
from ploneintranet.asynctasks.testing import start_redis_server
from ploneintranet.asynctasks.testing import stop_process
import random
import redis.asyncio as aioredis
import resource
import shutil
import sys
import tempfile
import time
from tornado import httpclient
from tornado import web
from tornado import websocket


#: Relative to the current directory: the checkout's root under ``make bench-push``.
DEFAULT_JSON = Path("var") / "bench-push.json"
USER_PREFIX = "bench-user-"
#: Sockets opened at the same time.
OPEN_BATCH = 50


class StandInPlone(web.RequestHandler):
    """``@@async-push-user`` of a site whose login cookie is the user id."""

    def get(self):
        cookie = self.get_cookie("__ac", "")
        if not cookie.startswith(USER_PREFIX):
            self.set_status(403)
        self.finish(cookie if cookie.startswith(USER_PREFIX) else "not logged in")


async def open_sockets(url, count, origin):
    """Open ``count`` sockets, user ``i`` on socket ``i``."""
    sockets = []
    for start in range(0, count, OPEN_BATCH):
        batch = [
            websocket.websocket_connect(
                httpclient.HTTPRequest(
                    url,
                    headers={"Cookie": f"__ac={USER_PREFIX}{index}", "Origin": origin},
                    request_timeout=60,
                )
            )
            for index in range(start, min(count, start + OPEN_BATCH))
        ]
        sockets.extend(await asyncio.gather(*batch))
    return sockets


async def read(socket, received):
    while (text := await socket.read_message()) is not None:
        received[json.loads(text)["target"]] = time.perf_counter()


async def publish_and_wait(redis_url, sockets, messages, rate, timeout=30):
    """Publish ``messages`` to random users; return ``(sent, received)`` times."""
    received = {}
    readers = [asyncio.ensure_future(read(socket, received)) for socket in sockets]
    client = aioredis.Redis.from_url(redis_url)
    sent = {}
    for number in range(messages):
        user = random.randrange(len(sockets))
        target = f"m{number}"
        text = json.dumps({"task": "bench", "status": "done", "snippet_url": "", "target": target})
        sent[target] = time.perf_counter()
        await client.publish(channel(f"{USER_PREFIX}{user}"), text)
        await asyncio.sleep(1 / rate)
    deadline = time.monotonic() + timeout
    while len(received) < messages and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for socket in sockets:
        socket.close()
    await asyncio.gather(*readers, return_exceptions=True)
    await client.aclose()
    return sent, received


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


async def measure(redis_url, directory, sockets, messages, rate):
    plone_port = free_port()
    stand_in = web.Application([(r"/plone/@@async-push-user", StandInPlone)]).listen(plone_port, "127.0.0.1")
    plone_url = f"http://127.0.0.1:{plone_port}/plone"
    push_port = free_port()
    push = start_push_server(push_port, plone_url, redis_url, directory)
    try:
        started = time.perf_counter()
        opened = await open_sockets(f"ws://127.0.0.1:{push_port}/push", sockets, f"http://127.0.0.1:{plone_port}")
        open_seconds = time.perf_counter() - started
        memory = rss_mib(push.pid)
        sent, received = await publish_and_wait(redis_url, opened, messages, rate)
    finally:
        stop_process(push)
        stand_in.stop()
    latencies = sorted((received[key] - sent[key]) * 1000 for key in sent if key in received)
    return {
        "sockets": sockets,
        "messages": messages,
        "rate_per_s": rate,
        "open_s": round(open_seconds, 3),
        "push_rss_mib": memory,
        "lost": messages - len(latencies),
        "latency_ms": {
            name: round(percentile(latencies, fraction), 2) if latencies else None
            for name, fraction in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))
        },
    }


def run(sockets=1000, messages=2000, rate=200):
    """Start Redis, measure, stop everything; return the figures."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 2 * sockets + 256))  # both ends of each socket
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    directory = tempfile.mkdtemp(prefix="asynctasks-bench-push-")
    port = free_port()
    redis_process = start_redis_server(port, directory)
    try:
        return asyncio.run(measure(f"redis://127.0.0.1:{port}/0", directory, sockets, messages, rate))
    finally:
        stop_process(redis_process)
        shutil.rmtree(directory, ignore_errors=True)


def main(argv=None):
    """Run the push benchmark with the command line ``argv``; return the exit status."""
    parser = argparse.ArgumentParser(prog="make bench-push", description="benchmark of the websocket push server")
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200, help="messages per second")
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"where to write the figures (default: {DEFAULT_JSON})"
    )
    args = parser.parse_args(argv)
    figures = run(args.sockets, args.messages, args.rate)
    latency = figures["latency_ms"]
    print(
        f"push: {figures['sockets']} sockets open in {figures['open_s']:.1f} s, push server "
        f"{figures['push_rss_mib']:.0f} MiB; {figures['messages']} messages at "
        f"{figures['rate_per_s']:g}/s, publish to delivery p50 {latency['p50']} ms, "
        f"p99 {latency['p99']} ms, max {latency['max']} ms, lost {figures['lost']}"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
