"""``make bench``: start the processes, measure, print the table, write JSON.

::

    .venv/bin/python -m asynctasks_benchmarks [--smoke]
        [--broker redis|sentinel|rabbitmq] [--rounds N] [--json var/bench.json]
        [--only enqueue,latency] [--keep] [--profile DIR] [--root CHECKOUT]

Run it from the root of the git checkout (``make bench`` does), or name the
checkout with ``--root``: its scripts/ build the site and the figures go to
its var/bench.json.
"""

import argparse
from asynctasks_benchmarks import measure
from asynctasks_benchmarks import profiling
from asynctasks_benchmarks import report
from asynctasks_benchmarks.client import PloneClient
from asynctasks_benchmarks.services import BROKERS
from asynctasks_benchmarks.services import TUNED_WORKER
from asynctasks_benchmarks.services import BenchStack
import contextlib
import dataclasses
import os
from pathlib import Path
import shutil
import signal
import sys
import tempfile
import time


MEASUREMENTS = {
    "enqueue": measure.enqueue_cost,
    "throughput": measure.throughput,
    "latency": measure.latency,
    "autosave": measure.autosave,
    "scale": measure.scale,
}


def say(message):
    print(message, file=sys.stderr, flush=True)


def warm_up(stack, client, sizes):
    """Fill caches and pools before anything is timed."""
    jobs = max(20, sizes.pipeline_jobs // 10)
    measure.direct_rate(client, jobs)
    for worker, kind in (("tuned", "post"), ("default", "default"), ("naive", "naive")):
        measure.drain_rate(stack, client, worker, kind, jobs, sizes.enqueue_batch)
    for _ in range(3):
        client.get(measure.PAGE)
        client.post(f"{measure.PAGE}/@@bench-enqueue-cost", jobs=10, run="warm-up")
    measure.discard_parked(stack)


def run(sizes, only, directory, checkout, profile=None, broker="redis"):
    """Measure ``only`` on a private ``broker`` (one of
    :data:`~asynctasks_benchmarks.services.BROKERS`); with ``profile`` (a
    directory), record Plone and the tuned worker with py-spy meanwhile."""
    results = {}
    with BenchStack(directory, checkout, broker=broker) as stack:
        say(
            f"bench: Plone {stack.portal_url}, broker {broker} {stack.broker_url.replace('guest:guest@', '')}, "
            f"results {stack.redis_url}, logs in {directory}/log"
        )
        client = PloneClient(stack.portal_url, stack.password)
        warm_up(stack, client, sizes)
        processes = {"plone": stack.plone.pid, "worker-tuned": stack.workers["tuned"].pid}
        for name in only:
            started = time.monotonic()
            say(f"bench: measuring {name} ...")
            recording = profiling.recording(profile, name, processes) if profile else contextlib.nullcontext()
            with recording:
                results[name] = MEASUREMENTS[name](stack, client, sizes)
            say(f"bench: {name} took {time.monotonic() - started:.0f} s")
    return results


def profile_summary(directory, only):
    lines = ["", f"Profiles (py-spy, in {directory}); the figures above are slowed down by it:"]
    for name in only:
        for path in sorted(Path(directory).glob(f"{name}-*.txt")):
            lines.extend(profiling.summarize(path))
    return "\n".join(lines)


def parse(argv):
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny numbers: proves the benchmark runs, measures nothing"
    )
    parser.add_argument(
        "--broker",
        choices=list(BROKERS),
        default="redis",
        help="the private broker: a redis-server, a Sentinel setup (master, replica, three sentinels) "
        "or a vhost on this machine's RabbitMQ, with the results in a redis-server (default: redis)",
    )
    parser.add_argument("--rounds", type=int, help="rounds of each comparison")
    parser.add_argument(
        "--root",
        type=Path,
        default=Path.cwd(),
        metavar="CHECKOUT",
        help="the git checkout whose scripts/ build the site (default: the current directory)",
    )
    parser.add_argument("--json", type=Path, help="where to write the figures (default: CHECKOUT/var/bench.json)")
    parser.add_argument(
        "--only", default=",".join(MEASUREMENTS), help=f"comma-separated measurements of {', '.join(MEASUREMENTS)}"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record where Plone and the tuned worker spend their time (py-spy) into DIR",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (Data.fs, logs) afterwards")
    args = parser.parse_args(argv)
    args.root = args.root.resolve()
    if not (args.root / "scripts" / "create_site.py").is_file():
        parser.error(
            f"{args.root} is not a git checkout of ploneintranet.asynctasks (no "
            "scripts/create_site.py): run `make bench` in the checkout, or pass --root"
        )
    if args.json is None:
        args.json = args.root / "var" / "bench.json"
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.only) - set(MEASUREMENTS)
    if unknown:
        parser.error(f"unknown measurement(s) {', '.join(sorted(unknown))}; choose from {', '.join(MEASUREMENTS)}")
    return args


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # so that every process is stopped


def main(argv=None):
    """Run the benchmark with the command line ``argv``; return the exit status."""
    args = parse(sys.argv[1:] if argv is None else argv)
    sizes = measure.SMOKE if args.smoke else measure.FULL
    if args.rounds:
        sizes = dataclasses.replace(sizes, rounds=args.rounds)
    if args.profile:
        profiling.py_spy()  # there, before anything starts
    signal.signal(signal.SIGTERM, _terminate)
    directory = tempfile.mkdtemp(prefix="asynctasks-bench-")
    load_before = os.getloadavg()[0]
    try:
        results = run(sizes, args.only, directory, args.root, args.profile, args.broker)
    finally:
        if args.keep:
            say(f"bench: kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    meta = {
        "broker": args.broker,
        "rounds": sizes.rounds,
        "sizes": dataclasses.asdict(sizes),
        "smoke": args.smoke,
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "tuned_worker": TUNED_WORKER.describe(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "profiled": bool(args.profile),
    }
    summary = report.summarize(results)
    print(report.table(summary, meta, results), flush=True)
    if args.profile:
        print(profile_summary(args.profile, args.only), flush=True)
    report.write_json(args.json, summary, meta, results)
    say(f"bench: figures written to {args.json}")
    return 0
