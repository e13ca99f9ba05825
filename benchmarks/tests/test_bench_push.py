"""The push benchmark runs: a few sockets, every message delivered."""

from asynctasks_benchmarks import push
import unittest


class TestPushBenchmark(unittest.TestCase):
    def test_smoke_run_delivers_every_message_and_reports_latency(self):
        figures = push.run(sockets=20, messages=60, rate=500)
        self.assertEqual(figures["lost"], 0)
        self.assertEqual(figures["sockets"], 20)
        latency = figures["latency_ms"]
        self.assertLessEqual(latency["p50"], latency["p99"])
        self.assertLessEqual(latency["p99"], latency["max"])
        self.assertGreater(figures["push_rss_mib"], 0)
