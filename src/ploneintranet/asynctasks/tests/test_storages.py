"""A restarted ZEO server never gives two clients the same new object id
(:mod:`ploneintranet.asynctasks.zeoclient`): a real ZEO server (``runzeo``)
on a free loopback port, two ``ClientStorage`` clients, the server stopped
and started again between their calls of ``new_oid``."""

from pathlib import Path
from ploneintranet.asynctasks import zeoclient
from ploneintranet.asynctasks.testing import free_port
from ploneintranet.asynctasks.testing import log_tail
from ploneintranet.asynctasks.testing import stop_process
from ploneintranet.asynctasks.testing import wait_until
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest
from ZEO.ClientStorage import ClientStorage


class TestNewOidsAfterAServerRestart(unittest.TestCase):
    def setUp(self):
        self.directory = Path(tempfile.mkdtemp(prefix="asynctasks-zeo-"))
        self.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)
        self.port = free_port()
        self.conf = self.directory / "zeo.conf"
        self.conf.write_text(
            f"<zeo>\n  address 127.0.0.1:{self.port}\n</zeo>\n"
            f"<filestorage 1>\n  path {self.directory}/Data.fs\n</filestorage>\n"
        )
        self.server = None
        self.start_server()
        self.addCleanup(lambda: stop_process(self.server))
        saved = ClientStorage.notify_connected
        self.addCleanup(setattr, ClientStorage, "notify_connected", saved)
        if saved is zeoclient._notify_connected:  # patched at a Zope start-up
            ClientStorage.notify_connected = zeoclient._notify_connected.original

    def start_server(self):
        log = self.directory / "zeo.log"
        with open(log, "ab") as output:
            self.server = subprocess.Popen(
                [str(Path(sys.executable).parent / "runzeo"), "-C", str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def accepts():
            if self.server.poll() is not None:
                raise RuntimeError(f"runzeo exited:\n{log_tail(log)}")
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(accepts, 30, 0.1, "the ZEO server")

    def client(self):
        storage = ClientStorage(("127.0.0.1", self.port), wait_timeout=30)
        self.addCleanup(storage.close)
        return storage

    def oids_after_a_restart(self):
        """The first client takes an id, the server restarts, a second
        client connects: ``(5 new ids of the first, 5 of the second)``."""
        first = self.client()
        first.new_oid()
        stop_process(self.server)
        self.start_server()
        second = self.client()
        wait_until(first.is_connected, 30, 0.1, "the first client to reconnect")
        return {first.new_oid() for _ in range(5)}, {second.new_oid() for _ in range(5)}

    def test_zeo_alone_hands_out_ids_twice(self):
        # what zeoclient mends: if this fails, ZEO itself was fixed, and the
        # patch can go
        first, second = self.oids_after_a_restart()
        self.assertTrue(first & second)

    def test_with_the_patch_every_id_is_given_once(self):
        zeoclient.forget_prefetched_oids()
        zeoclient.forget_prefetched_oids()  # twice: patched once
        self.assertIs(ClientStorage.notify_connected, zeoclient._notify_connected)
        first, second = self.oids_after_a_restart()
        self.assertEqual(first & second, set())
