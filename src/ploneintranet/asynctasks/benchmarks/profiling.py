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
        spies.append(subprocess.Popen(
            [py_spy(), "record", "--pid", str(pid), "--format", "raw", "--gil",
             "--subprocesses", "--nonblocking", "--rate", str(rate), "--output", str(output)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
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


def summarize(path, top=10):
    """Lines saying where the samples of a raw py-spy profile went: own
    time by package and by function."""
    own, functions, total = Counter(), Counter(), 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        samples = int(count)
        total += samples
        own[_package(frames[-1])] += samples
        functions[_function(frames[-1])] += samples
    if not total:
        return [f"{path}: no samples"]
    def shares(counter):
        return ", ".join(f"{what} {100 * n / total:.0f}%" for what, n in counter.most_common(top))

    return [f"{Path(path).name}: {total} samples with the GIL held",
            f"  own time by package: {shares(own)}",
            f"  own time by function: {shares(functions)}"]
