"""The targets of the benchmark issue, the printed table and the JSON file."""

from dataclasses import dataclass
import json
import statistics


@dataclass(frozen=True)
class Row:
    """One line of the table: ``figure`` of the rounds of ``measurement``,
    shown in ``unit`` (its ``scale`` converts seconds or bytes)."""

    key: str
    number: int
    label: str
    measurement: str
    figure: str
    unit: str
    scale: float = 1.0
    at_most: float = None
    at_least: float = None

    @property
    def target(self):
        if self.at_most is not None and self.at_least is not None:
            return f"{self.at_least:g}-{self.at_most:g} {self.unit}"
        if self.at_most is not None:
            return f"<= {self.at_most:g} {self.unit}"
        if self.at_least is not None:
            return f">= {self.at_least:g} {self.unit}"
        return ""

    def met(self, value):
        if self.at_most is None and self.at_least is None:
            return None
        return (self.at_most is None or value <= self.at_most) and (self.at_least is None or value >= self.at_least)


MS, MB = 1000.0, 1 / 1_000_000

ROWS = (
    Row(
        "enqueue_one_median",
        1,
        "enqueue, 1 job per transaction: median per job",
        "enqueue",
        "one_median",
        "ms",
        MS,
        at_most=0.25,
    ),
    Row("enqueue_one_p99", 1, "enqueue, 1 job per transaction: p99 per job", "enqueue", "one_p99", "ms", MS),
    Row(
        "enqueue_ten_median",
        1,
        "enqueue, 10 jobs per transaction: median per job",
        "enqueue",
        "ten_median",
        "ms",
        MS,
        at_most=0.25,
    ),
    Row("enqueue_ten_p99", 1, "enqueue, 10 jobs per transaction: p99 per job", "enqueue", "ten_p99", "ms", MS),
    Row(
        "enqueue_ten_over_one",
        1,
        "enqueue, 10 jobs vs 1 job per transaction",
        "enqueue",
        "ten_over_one",
        "x",
        at_most=3,
    ),
    Row(
        "enqueue_one_celery",
        1,
        "enqueue by Celery's road, 1 job: median per job",
        "enqueue",
        "one_celery_median",
        "ms",
        MS,
    ),
    Row(
        "enqueue_ten_celery",
        1,
        "enqueue by Celery's road, 10 jobs: median per job",
        "enqueue",
        "ten_celery_median",
        "ms",
        MS,
    ),
    Row(
        "enqueue_one_celery_ratio",
        1,
        "Celery's road vs the Redis writer, 1 job",
        "enqueue",
        "one_celery_over_writer",
        "x",
    ),
    Row(
        "enqueue_ten_celery_ratio",
        1,
        "Celery's road vs the Redis writer, 10 jobs",
        "enqueue",
        "ten_celery_over_writer",
        "x",
    ),
    Row("page_render", 1, "plain Plone page (GET, logged in), for scale", "enqueue", "page_median", "ms", MS),
    Row("direct_rate", 2, "direct: one keep-alive client POSTs the write view", "throughput", "direct", "req/s"),
    Row("pipeline_rate", 2, "pipeline: 1,000 queued jobs, tuned worker", "throughput", "pipeline", "jobs/s"),
    Row("pipeline_over_direct", 2, "pipeline vs direct", "throughput", "pipeline_over_direct", "x", at_least=0.8),
    Row(
        "default_worker_rate", 2, "pipeline, worker with make run's settings", "throughput", "default_worker", "jobs/s"
    ),
    Row("naive_rate", 2, "naive: requests.post per job, results stored", "throughput", "naive", "jobs/s"),
    Row("latency_p50", 3, "latency enqueue -> committed write: p50", "latency", "p50", "ms", MS, at_most=15),
    Row("latency_p99", 3, "latency enqueue -> committed write: p99", "latency", "p99", "ms", MS, at_most=60),
    Row(
        "latency_reached_p50", 3, "latency: of which until the write view runs, p50", "latency", "reached_p50", "ms", MS
    ),
    Row("save_sync", 4, "save of a 200 KB page, reindex in the request", "autosave", "sync", "ms", MS),
    Row("save_deferred", 4, "save of a 200 KB page, ReindexObject job", "autosave", "deferred", "ms", MS),
    Row("save_speedup", 4, "save: sync vs deferred", "autosave", "speedup", "x", at_least=3),
    Row("save_reindexed", 4, "deferred save: page reindexed after", "autosave", "reindexed", "ms", MS),
    Row("scale_rate", 5, "drain of queued jobs: overall", "scale", "rate", "jobs/s"),
    Row("scale_first", 5, "drain: first window", "scale", "first", "jobs/s"),
    Row("scale_last", 5, "drain: last window", "scale", "last", "jobs/s"),
    Row(
        "scale_last_over_first",
        5,
        "drain: last vs first window",
        "scale",
        "last_over_first",
        "x",
        at_least=0.9,
        at_most=1.1,
    ),
    Row("scale_rss_growth", 5, "drain: tuned worker memory growth", "scale", "rss_growth", "MB", MB, at_most=20),
)


def _number(value):
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def summarize(results):
    """``{row key: {value, min, max, rounds, target, met, ...}}`` from the
    per-round figures of each measurement (missing ones are skipped)."""
    summary = {}
    for row in ROWS:
        rounds = results.get(row.measurement)
        if not rounds:
            continue
        values = [r[row.figure] * row.scale for r in rounds]
        value = statistics.median(values)
        summary[row.key] = {
            "label": row.label,
            "number": row.number,
            "unit": row.unit,
            "value": value,
            "min": min(values),
            "max": max(values),
            "rounds": values,
            "target": row.target or None,
            "met": row.met(value),
        }
    return summary


def cpu_lines(results):
    """Where the time of measurement 2 went: CPU ms per job of each process,
    the median over the rounds (the pipeline's include enqueueing in Plone)."""
    rounds = results.get("throughput") or []
    if not rounds:
        return []
    lines = ["", "CPU per job, ms (median of the rounds; pipelines include enqueueing):"]
    for contender in rounds[0]["cpu_ms_per_job"]:
        names = sorted({n for r in rounds for n in r["cpu_ms_per_job"][contender]})
        parts = []
        for name in names:
            values = [r["cpu_ms_per_job"][contender].get(name, 0.0) for r in rounds]
            parts.append(f"{name} {statistics.median(values):.2f}")
        lines.append(f"  {contender:<15} " + ", ".join(parts))
    return lines


def scale_lines(results):
    """The drains of measurement 5 window by window, and the CPU per job of
    their first and last window: the same CPU with fewer jobs/s is a busier
    machine, more CPU per job a slower pipeline."""
    lines = []
    for number, figures in enumerate(results.get("scale") or [], 1):
        if not lines:
            lines.append("")
        cpu = {
            which: ", ".join(f"{name} {ms:.2f}" for name, ms in figures[which].items())
            for which in ("cpu_ms_first", "cpu_ms_last")
        }
        lines.append(
            f"Drain {number} (5), jobs/s of each window: " + " ".join(f"{rate:.0f}" for rate in figures["windows"])
        )
        lines.append(f"  CPU per job, ms: first window {cpu['cpu_ms_first']}; last window {cpu['cpu_ms_last']}")
    return lines


def table(summary, meta, results=None):
    """The text table that ``make bench`` prints."""
    lines = [
        f"ploneintranet.asynctasks benchmark: broker {meta.get('broker', 'redis')}, {meta['rounds']} round(s), "
        f"{meta['cpus']} CPUs, load average {meta['load_before']:.2f} before, "
        f"{meta['load_after']:.2f} after",
        f"tuned worker: {meta['tuned_worker']}",
        "",
        f"{'#':<2} {'measurement':<52} {'median':>8} {'spread':>15} {'unit':<6} {'target':<15} met",
    ]
    for row in ROWS:
        figure = summary.get(row.key)
        if figure is None:
            lines.append(f"{row.number:<2} {row.label:<52} {'(not run)':>8}")
            continue
        spread = "-" if len(figure["rounds"]) < 2 else f"{_number(figure['min'])}-{_number(figure['max'])}"
        met = {True: "yes", False: "NO", None: ""}[figure["met"]]
        lines.append(
            f"{row.number:<2} {row.label:<52} {_number(figure['value']):>8} "
            f"{spread:>15} {row.unit:<6} {row.target:<15} {met}".rstrip()
        )
    if meta.get("broker") == "rabbitmq" and "enqueue_one_celery" in summary:
        lines.append("RabbitMQ: every job goes by Celery's road; the Redis writer is for Redis brokers only.")
    lines.extend(cpu_lines(results or {}))
    lines.extend(scale_lines(results or {}))
    targets = [f for f in summary.values() if f["met"] is not None]
    lines.append("")
    lines.append(f"targets met: {sum(f['met'] for f in targets)} of {len(targets)}")
    return "\n".join(lines)


def write_json(path, summary, meta, results):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "rows": summary, "rounds": results}, indent=2) + "\n")
