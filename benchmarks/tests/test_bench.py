"""``make bench`` still works: a smoke run with tiny numbers.

The benchmark is not a test: this only proves that it starts every process,
makes every measurement and reports every row. Its targets are not checked
(tiny numbers on a busy machine say nothing); see docs/benchmarks.rst.

It lives in the checkout's benchmarks/ (the development package
``asynctasks_benchmarks``, installed by ``make install``) and runs here as
``make bench`` runs it: from the checkout's root, where pytest runs.
"""

from asynctasks_benchmarks import report
import json
from pathlib import Path
import subprocess
import sys
import tempfile
import unittest


class TestBenchSmoke(unittest.TestCase):
    def test_smoke_run_reports_every_row(self):
        with tempfile.TemporaryDirectory(prefix="asynctasks-bench-test-") as directory:
            figures = Path(directory) / "bench.json"
            result = subprocess.run(
                [sys.executable, "-m", "asynctasks_benchmarks", "--smoke", "--json", str(figures)],
                capture_output=True,
                text=True,
                timeout=300,
                stdin=subprocess.DEVNULL,
            )
            self.assertEqual(result.returncode, 0, result.stderr[-4000:])
            written = json.loads(figures.read_text())

        for row in report.ROWS:
            self.assertIn(row.label, result.stdout)
            self.assertIn(row.key, written["rows"])
            self.assertIsInstance(written["rows"][row.key]["value"], float)
            if row.target:
                self.assertIn(written["rows"][row.key]["met"], (True, False))
        self.assertIn("targets met:", result.stdout)
        self.assertNotIn("(not run)", result.stdout)
        self.assertTrue(written["meta"]["smoke"])


class TestBenchBrokers(unittest.TestCase):
    """``--broker``: the benchmark runs on a private Sentinel setup and on a
    private vhost of this machine's RabbitMQ, as ``make test`` sets them up
    (two measurements only, to keep it short)."""

    rows = ("enqueue_one_median", "enqueue_ten_median", "latency_p50", "latency_p99")

    def smoke(self, broker):
        with tempfile.TemporaryDirectory(prefix="asynctasks-bench-test-") as directory:
            figures = Path(directory) / "bench.json"
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "asynctasks_benchmarks",
                    "--smoke",
                    "--broker",
                    broker,
                    "--only",
                    "enqueue,latency",
                    "--json",
                    str(figures),
                ],
                capture_output=True,
                text=True,
                timeout=300,
                stdin=subprocess.DEVNULL,
            )
            self.assertEqual(result.returncode, 0, result.stderr[-4000:])
            written = json.loads(figures.read_text())
        self.assertEqual(written["meta"]["broker"], broker)
        self.assertIn(f"benchmark: broker {broker},", result.stdout)
        for key in self.rows:
            self.assertGreater(written["rows"][key]["value"], 0, key)
        self.assertNotIn("throughput", written["rounds"])
        return result

    def test_sentinel(self):
        result = self.smoke("sentinel")
        self.assertIn("broker sentinel sentinel://127.0.0.1:", result.stderr)

    def test_rabbitmq(self):
        result = self.smoke("rabbitmq")
        self.assertRegex(result.stderr, r"broker rabbitmq amqp://127\.0\.0\.1:5672/asynctasks-test-")
        self.assertNotIn("guest:guest", result.stdout + result.stderr)
        self.assertIn("every job goes by Celery's road", result.stdout)
