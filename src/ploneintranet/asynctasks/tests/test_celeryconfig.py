"""Settings are read from the environment, and bad values are refused with a
message that names the variable."""

import os
import subprocess
import sys
import unittest


def read_settings(**environ):
    """Import celeryconfig in a fresh interpreter with ``environ``; return
    ``(exit status, output)``."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import ploneintranet.asynctasks.celeryconfig as c; "
            "print(c.ASYNC_SWEEP_INTERVAL, c.ASYNC_ALLOWED_ORIGINS, c.ASYNC_PUSH_ALLOWED_ORIGINS)",
        ],
        env=dict(os.environ, **environ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, result.stdout + result.stderr


class TestSettings(unittest.TestCase):
    def test_a_sweep_interval_of_zero_is_refused(self):
        status, output = read_settings(ASYNC_SWEEP_INTERVAL="0")
        self.assertNotEqual(status, 0)
        self.assertIn("ASYNC_SWEEP_INTERVAL=0", output)

    def test_origin_lists_are_read_alike(self):
        origins = " HTTPS://Intranet.Example.com/ ,http://127.0.0.1:8080,, "
        status, output = read_settings(
            ASYNC_SWEEP_INTERVAL="2.5", ASYNC_ALLOWED_ORIGINS=origins, ASYNC_PUSH_ALLOWED_ORIGINS=origins
        )
        self.assertEqual(status, 0, output)
        expected = "['https://intranet.example.com', 'http://127.0.0.1:8080']"
        self.assertEqual(output.strip(), f"2.5 {expected} {expected}")
