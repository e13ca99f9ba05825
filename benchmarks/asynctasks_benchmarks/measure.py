"""The five measurements; each returns one dict of per-round figures.

Comparisons are made side by side, interleaved within each round, since
absolute times drift on shared machines. Jobs are enqueued through Plone as
the benchmark's editor, so they carry the editor's ``__ac`` cookie and a CSRF
token like any user's jobs.
"""

from asynctasks_benchmarks import site
from asynctasks_benchmarks.client import BenchError
from dataclasses import dataclass
import itertools
import statistics
import time
import uuid


PAGE = site.SMALL_PAGE


@dataclass(frozen=True)
class Sizes:
    """How much each measurement does; :data:`FULL` is ``make bench``."""

    rounds: int = 5
    enqueue_requests: int = 200
    page_renders: int = 20
    pipeline_jobs: int = 1000
    latency_jobs: int = 100
    #: 10 jobs/s: each job is two Plone requests (enqueue, write), and Plone
    #: serves about 100 trivial ones a second here; at 50 jobs/s it would be
    #: busy most of the time, and the latency would measure its queue.
    latency_interval: float = 0.1
    saves: int = 5
    scale_jobs: int = 10_000
    scale_window: int = 1000
    #: Drains of ``scale_jobs``: one window is 10 s, and on a shared machine
    #: the load of 10 s apart differs by more than the target's 10%.
    scale_rounds: int = 3
    enqueue_batch: int = 200


FULL = Sizes()
#: Tiny numbers that prove the benchmark runs (tests/test_bench.py).
SMOKE = Sizes(
    rounds=1,
    enqueue_requests=4,
    page_renders=2,
    pipeline_jobs=20,
    latency_jobs=4,
    latency_interval=0.02,
    saves=1,
    scale_jobs=60,
    scale_window=20,
    scale_rounds=1,
    enqueue_batch=30,
)


def percentile(values, fraction):
    """Nearest-rank percentile of ``values`` (``fraction`` 0.99 is p99)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def discard_parked(stack):
    """Throw away the parked jobs (:meth:`BenchStack.discard_parked
    <asynctasks_benchmarks.services.BenchStack.discard_parked>`)."""
    stack.discard_parked()


def new_run(name):
    return f"{name}-{uuid.uuid4().hex[:8]}"


def wait_for_effects(client, run, count, timeout, on_poll=None):
    """Wait until ``count`` writes of ``run`` committed; return them with times.

    Polls four times a second: each poll is a Plone request, and Plone is
    what the jobs wait for. ``on_poll(done)`` is called at every poll.
    """
    deadline = time.monotonic() + timeout
    while True:
        done = client.get(f"{PAGE}/@@bench-effects", run=run).json()["count"]
        if on_poll is not None:
            on_poll(done)
        if done >= count:
            return client.get(f"{PAGE}/@@bench-effects", run=run, times=1).json()
        if time.monotonic() > deadline:
            raise BenchError(
                f"only {done} of {count} jobs of {run} committed within {timeout:g} s; "
                "see the worker logs in the benchmark's directory"
            )
        time.sleep(0.25)


def drain_timeout(jobs):
    return 60 + jobs / 20


# --- 1. enqueue cost ---------------------------------------------------------


def enqueue_cost(stack, client, sizes):
    """Seconds per job the user's request pays to create and send 1 and 10
    jobs in one transaction (commit included), beside a plain page's render."""
    rounds = []
    for _ in range(sizes.rounds):
        run = new_run("cost")
        one, ten, pages, one_celery, ten_celery = [], [], [], [], []
        for number in range(sizes.enqueue_requests):
            one.append(client.post(f"{PAGE}/@@bench-enqueue-cost", jobs=1, run=run).json())
            ten.append(client.post(f"{PAGE}/@@bench-enqueue-cost", jobs=10, run=run).json())
            # the same by Celery's own road, interleaved: what the writer saves
            one_celery.append(client.post(f"{PAGE}/@@bench-enqueue-cost", jobs=1, run=run, road="celery").json())
            ten_celery.append(client.post(f"{PAGE}/@@bench-enqueue-cost", jobs=10, run=run, road="celery").json())
            if number % max(1, sizes.enqueue_requests // sizes.page_renders) == 0:
                started = time.perf_counter()
                client.get(PAGE)
                pages.append(time.perf_counter() - started)
        discard_parked(stack)
        rounds.append(
            {
                "one_median": statistics.median(one),
                "one_p99": percentile(one, 0.99),
                "ten_median": statistics.median(ten) / 10,
                "ten_p99": percentile(ten, 0.99) / 10,
                "ten_over_one": statistics.median(ten) / statistics.median(one),
                "one_celery_median": statistics.median(one_celery),
                "ten_celery_median": statistics.median(ten_celery) / 10,
                "one_celery_over_writer": statistics.median(one_celery) / statistics.median(one),
                "ten_celery_over_writer": statistics.median(ten_celery) / statistics.median(ten),
                "page_median": statistics.median(pages),
            }
        )
    return rounds


# --- 2. pipeline throughput ---------------------------------------------------


def enqueue_jobs(client, kind, run, jobs, batch, **form):
    """Enqueue ``jobs`` jobs of ``kind`` through Plone, ``batch`` per request."""
    for start in range(0, jobs, batch):
        client.post(f"{PAGE}/@@bench-enqueue", kind=kind, run=run, jobs=min(batch, jobs - start), **form)


def drain_rate(stack, client, worker, kind, jobs, batch, on_poll=None, **form):
    """Queue ``jobs`` jobs while ``worker`` is paused, let it go; return the
    jobs/s from the first to the last committed write, and the writes.

    (Timed from the first write, not from the resume: a worker takes up to a
    second, its broker poll, to notice that it may consume again.)
    """
    run = new_run(kind)
    stack.pause_worker(worker)
    try:
        enqueue_jobs(client, kind, run, jobs, batch, **form)
    finally:
        stack.resume_worker(worker)
    effects = wait_for_effects(client, run, jobs, drain_timeout(jobs), on_poll)
    committed = effects["committed"]
    return (jobs - 1) / (max(committed) - min(committed)), effects


def direct_rate(client, jobs):
    """Writes/s of one keep-alive client POSTing ``@@bench-write`` in a row."""
    run = new_run("direct")
    started = time.perf_counter()
    for _ in range(jobs):
        client.post(f"{PAGE}/@@bench-write", run=run)
    return jobs / (time.perf_counter() - started)


def cpu_per_job(stack, jobs, measurement):
    """Call ``measurement``; return its result and the milliseconds of CPU
    each process used per job meanwhile (where the time goes)."""
    before = stack.cpu_seconds()
    result = measurement()
    after = stack.cpu_seconds()
    used = {name: (after[name] - before[name]) * 1000 / jobs for name in after}
    return result, {name: ms for name, ms in used.items() if ms >= 0.005}


def throughput(stack, client, sizes):
    """Per round, in a rotating order: direct POSTs, the pipeline with the
    tuned worker, with the default worker, and the naive way; with the CPU
    per job of each process."""
    contenders = {
        "direct": lambda: direct_rate(client, sizes.pipeline_jobs),
        "pipeline": lambda: drain_rate(stack, client, "tuned", "post", sizes.pipeline_jobs, sizes.enqueue_batch)[0],
        "default_worker": lambda: drain_rate(
            stack, client, "default", "default", sizes.pipeline_jobs, sizes.enqueue_batch
        )[0],
        "naive": lambda: drain_rate(stack, client, "naive", "naive", sizes.pipeline_jobs, sizes.enqueue_batch)[0],
    }
    names = list(contenders)
    rounds = []
    for number in range(sizes.rounds):
        shift = number % len(names)
        figures = {"cpu_ms_per_job": {}}
        for name in names[shift:] + names[:shift]:
            figures[name], figures["cpu_ms_per_job"][name] = cpu_per_job(stack, sizes.pipeline_jobs, contenders[name])
        figures["pipeline_over_direct"] = figures["pipeline"] / figures["direct"]
        rounds.append(figures)
    return rounds


# --- 3. latency ----------------------------------------------------------------


def latency(stack, client, sizes):
    """Seconds from enqueueing a job to its committed write, one job per
    request every ``latency_interval`` seconds (light load); and until the
    write view started, the part before Plone does the job."""
    rounds = []
    for _ in range(sizes.rounds):
        run = new_run("latency")
        started = time.monotonic()
        for number in range(sizes.latency_jobs):
            pause = started + number * sizes.latency_interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            client.post(f"{PAGE}/@@bench-enqueue", kind="post", run=run, jobs=1)
        effects = wait_for_effects(client, run, sizes.latency_jobs, drain_timeout(sizes.latency_jobs))
        latencies = effects["latencies"]
        rounds.append(
            {
                "p50": statistics.median(latencies),
                "p99": percentile(latencies, 0.99),
                "reached_p50": statistics.median(effects["reached"]),
                "latencies": sorted(latencies),
            }
        )
    return rounds


# --- 4. autosave ---------------------------------------------------------------


def wait_until_indexed(client, word, timeout=120):
    deadline = time.monotonic() + timeout
    while not client.get(f"{site.LARGE_PAGE}/@@bench-indexed", word=word).json():
        if time.monotonic() > deadline:
            raise BenchError(f"the large page with {word!r} was not reindexed in {timeout} s")
        time.sleep(0.05)


def autosave(stack, client, sizes):
    """Round trip of saving the large page with the reindex done at once
    (``sync``) or by a ReindexObject job (``deferred``); between saves the
    job's reindex is awaited, as autosaves are seconds apart."""
    text = site.large_text()
    counter = itertools.count()
    rounds = []
    for _ in range(sizes.rounds):
        times = {"sync": [], "deferred": [], "reindexed": []}
        for _ in range(sizes.saves):
            for mode in ("sync", "deferred"):
                word = f"benchsave{next(counter)}{uuid.uuid4().hex[:6]}"
                started = time.perf_counter()
                client.post(f"{site.LARGE_PAGE}/@@bench-save", reindex=mode, text=f"<p>{word}</p>{text}")
                saved = time.perf_counter()
                wait_until_indexed(client, word)
                times[mode].append(saved - started)
                if mode == "deferred":
                    times["reindexed"].append(time.perf_counter() - started)
        sync, deferred = (statistics.median(times[m]) for m in ("sync", "deferred"))
        rounds.append(
            {
                "sync": sync,
                "deferred": deferred,
                "speedup": sync / deferred,
                "reindexed": statistics.median(times["reindexed"]),
            }
        )
    return rounds


# --- 5. scale ------------------------------------------------------------------


def _windows(committed, window):
    """Writes/s of each run of ``window`` writes, in order."""
    return [
        (window - 1) / (committed[start + window - 1] - committed[start])
        for start in range(0, len(committed) - window + 1, window)
    ]


def _cpu_per_job(samples, first, last):
    """CPU ms per job of each process between the polls that saw ``first``
    and ``last`` writes done (``samples``: (done, cpu seconds) per poll)."""
    start = next(s for s in samples if s[0] >= first)
    end = next(s for s in samples if s[0] >= last)
    jobs = max(1, end[0] - start[0])
    return {name: (end[1][name] - start[1][name]) * 1000 / jobs for name in ("plone", "worker-tuned", "broker")}


def scale(stack, client, sizes):
    """Drain ``scale_jobs`` queued jobs, ``scale_rounds`` times: throughput of
    the first and the last ``scale_window`` writes (and of every window, with
    the CPU per job of the first and last, to tell a slower pipeline from a
    busier machine), and the tuned worker's memory growth."""
    return [_drain_once(stack, client, sizes) for _ in range(sizes.scale_rounds)]


def _drain_once(stack, client, sizes):
    samples = []
    before = stack.worker_rss("tuned")
    rate, effects = drain_rate(
        stack,
        client,
        "tuned",
        "post",
        sizes.scale_jobs,
        sizes.enqueue_batch,
        on_poll=lambda done: samples.append((done, stack.cpu_seconds())),
    )
    after = stack.worker_rss("tuned")
    committed = sorted(effects["committed"])
    window = sizes.scale_window
    windows = _windows(committed, window)
    first = (window - 1) / (committed[window - 1] - committed[0])
    last = (window - 1) / (committed[-1] - committed[-window])
    jobs = sizes.scale_jobs
    return {
        "rate": rate,
        "first": first,
        "last": last,
        "last_over_first": last / first,
        "windows": windows,
        "cpu_ms_first": _cpu_per_job(samples, 0, window),
        "cpu_ms_last": _cpu_per_job(samples, jobs - window, jobs),
        "rss_before": before,
        "rss_after": after,
        "rss_growth": after - before,
    }
