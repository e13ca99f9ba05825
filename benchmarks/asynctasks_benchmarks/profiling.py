"""Where the time goes: py-spy profiles of the benchmark's processes.

``make bench BENCH_ARGS="--profile var/bench-profile"`` records, during each
measurement, the Plone instance and the tuned worker with ``py-spy record
--gil`` (only the thread holding the GIL: where the Python CPU time goes) and
writes the raw stacks and a summary per process. Profiling slows the
processes down, so the figures of that run are not the benchmark's.
"""

from collections import Counter
import contextlib
from pathlib import Path
import shutil
import signal
import subprocess
import sys


def py_spy():
    """The py-spy command, or an error that says how to get it."""
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("--profile needs py-spy: `make bench` installs it (pip install py-spy)")
    return found


@contextlib.contextmanager
def recording(directory, measurement, pids, rate=200):
    """Record the processes ``{name: pid}`` while the block runs, into
    ``directory/<measurement>-<name>.txt`` (py-spy's raw, collapsed stacks)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    spies = []
    for name, pid in pids.items():
        output = directory / f"{measurement}-{name}.txt"
        spies.append(
            subprocess.Popen(
                [
                    py_spy(),
                    "record",
                    "--pid",
                    str(pid),
                    "--format",
                    "raw",
                    "--gil",
                    "--subprocesses",
                    "--nonblocking",
                    "--rate",
                    str(rate),
                    "--output",
                    str(output),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        yield
    finally:
        for spy in spies:
            with contextlib.suppress(ProcessLookupError):
                spy.send_signal(signal.SIGINT)  # py-spy writes its output and ends
        for spy in spies:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(10)


def _package(frame):
    """``ZPublisher`` for ``publish (ZPublisher/WSGIPublisher.py:266)``
    (py-spy keeps the last two parts of a path)."""
    parts = frame.rpartition(" (")[2].split(":")[0].split("/")
    return parts[0].removesuffix(".py")  # a package, or a module of the stdlib


def _function(frame):
    name, _, where = frame.rpartition(" (")
    return f"{name} ({where.split(':')[0]})"


#: The steps of our own code paths: (label, a function name on the stack).
STEPS = (
    ("@@bench-enqueue-cost (measurement 1)", "EnqueueCostView.run"),
    ("@@bench-write (a job's work)", "WriteView.run"),
    ("job created (AbstractPost.__init__)", "AbstractPost.__init__"),
    ("job checked and queued (AbstractPost.__call__)", "AbstractPost.__call__"),
    ("broker ping in the vote", "JobsOfTransaction.tpc_vote"),
    ("sending after the commit (tpc_finish)", "JobsOfTransaction.tpc_finish"),
    ("of which Celery's apply_async", "Task.apply_async"),
    ("of which the Redis writer (rediswriter)", "rediswriter.py"),
    ("the worker's task (dispatch)", "JobTask.__call__"),
    ("of which the HTTP POST (requests)", "Session.request"),
    ("kombu's bookkeeping of unacked jobs", "QoS."),
    ("receiving jobs from Redis", "_brpop_read"),
    ("logging", "(logging/__init__.py"),
)


def summarize(path, top=10):
    """Lines saying where the samples of a raw py-spy profile went: own
    time by package and by function, and the share of the steps of
    :data:`STEPS` (on the stack, so nested steps overlap)."""
    own, functions, steps, total = Counter(), Counter(), Counter(), 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        samples = int(count)
        total += samples
        own[_package(frames[-1])] += samples
        functions[_function(frames[-1])] += samples
        for label, function in STEPS:
            if function in stack:
                steps[label] += samples
    if not total:
        return [f"{path}: no samples"]

    def shares(counter, limit=top):
        return ", ".join(f"{what} {100 * n / total:.0f}%" for what, n in counter.most_common(limit))

    lines = [
        f"{Path(path).name}: {total} samples with the GIL held",
        f"  own time by package: {shares(own)}",
        f"  own time by function: {shares(functions)}",
    ]
    if steps:
        ordered = Counter({label: steps[label] for label, _ in STEPS if steps[label]})
        lines.append("  steps: " + ", ".join(f"{label} {100 * n / total:.0f}%" for label, n in ordered.items()))
    return lines
