"""The database clients ride out a restart of their server
(:mod:`ploneintranet.asynctasks.storages`).

ZEO: a real ZEO server (``runzeo``) on a free loopback port, two
``ClientStorage`` clients, the server stopped and started again between their
calls of ``new_oid``: a restarted server never gives two clients the same new
object id. RelStorage: a PostgreSQL cluster of the test's own (``initdb`` on a
free port), stopped while a ZODB transaction begins and started again 2 s
later: the transaction waits for it and commits."""

from pathlib import Path
from ploneintranet.asynctasks import storages
from ploneintranet.asynctasks.testing import PostgreSQLCluster
from ploneintranet.asynctasks.testing import free_port
from ploneintranet.asynctasks.testing import log_tail
from ploneintranet.asynctasks.testing import stop_process
from ploneintranet.asynctasks.testing import wait_until
import psycopg2
from relstorage.adapters.connections import AbstractManagedConnection
from relstorage.adapters.postgresql import PostgreSQLAdapter
from relstorage.options import Options
from relstorage.storage import RelStorage
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import transaction
from transaction.interfaces import TransientError
import unittest
from ZEO.ClientStorage import ClientStorage
import ZODB


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
        if saved is storages._notify_connected:  # patched at a Zope start-up
            ClientStorage.notify_connected = storages._notify_connected.original

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
        # what storages mends: if this fails, ZEO itself was fixed, and the
        # patch can go
        first, second = self.oids_after_a_restart()
        self.assertTrue(first & second)

    def test_with_the_patch_every_id_is_given_once(self):
        storages.forget_prefetched_oids()
        storages.forget_prefetched_oids()  # twice: patched once
        self.assertIs(ClientStorage.notify_connected, storages._notify_connected)
        first, second = self.oids_after_a_restart()
        self.assertEqual(first & second, set())


class TestRelStorageWaitsForItsDatabase(unittest.TestCase):
    def setUp(self):
        self.cluster = PostgreSQLCluster(tempfile.mkdtemp(prefix="asynctasks-relstorage-"))
        self.addCleanup(self.cluster.remove)
        self.cluster.init()
        adapter = PostgreSQLAdapter(dsn=f"{self.cluster.dsn} dbname=postgres", options=Options())
        self.db = ZODB.DB(RelStorage(adapter, options=Options(create_schema=True)))
        self.addCleanup(self.db.close)
        self.manager = transaction.TransactionManager()
        self.connection = self.db.open(self.manager)
        self.addCleanup(self.connection.close)
        self.connection.root()["saves"] = 0
        self.manager.commit()
        mended = AbstractManagedConnection._open_connection is storages._open_connection
        saved = AbstractManagedConnection._open_connection, RelStorage.tpc_begin, RelStorage.tpc_vote
        self.addCleanup(self.restore, *saved)
        if mended:  # patched at a Zope start-up
            self.restore(
                storages._open_connection.original, RelStorage.tpc_begin.original, RelStorage.tpc_vote.original
            )

    @staticmethod
    def restore(open_connection, tpc_begin, tpc_vote):
        AbstractManagedConnection._open_connection = open_connection
        RelStorage.tpc_begin, RelStorage.tpc_vote = tpc_begin, tpc_vote

    def save_while_the_database_restarts(self):
        """Stop PostgreSQL, start it again 2 s later in a thread, and save
        meanwhile: ``(seconds the save took)``."""
        self.cluster.stop()
        later = threading.Timer(2, self.cluster.start)
        later.start()
        self.addCleanup(later.join)
        started = time.monotonic()
        try:
            self.manager.begin()
            self.connection.root()["saves"] += 1
            self.manager.commit()
        except BaseException:
            self.manager.abort()
            raise
        return time.monotonic() - started

    def test_relstorage_alone_refuses_the_save(self):
        # what storages mends: if this fails, RelStorage waits by itself
        with self.assertRaises(psycopg2.OperationalError):
            self.save_while_the_database_restarts()

    def test_with_the_patch_the_save_waits_and_commits(self):
        storages.wait_for_the_database()
        storages.wait_for_the_database()  # twice: patched once
        self.assertEqual(RelStorage.tpc_vote.original.__name__, "tpc_vote")
        self.assertFalse(hasattr(RelStorage.tpc_vote.original, "original"))
        took = self.save_while_the_database_restarts()
        self.assertGreater(took, 1.5)
        self.manager.begin()
        self.assertEqual(self.connection.root()["saves"], 1)

    def test_a_connection_lost_in_the_commit_may_be_retried(self):
        storages.wait_for_the_database()
        storage = self.connection._storage
        error = psycopg2.OperationalError("server closed the connection unexpectedly")

        def lose_the_database(*args):
            raise error

        self.addCleanup(setattr, RelStorage, "tpc_vote", RelStorage.tpc_vote)
        RelStorage.tpc_vote = storages._restartable(lose_the_database)
        with self.assertRaises(storages.DatabaseRestarted) as raised:
            storage.tpc_vote(None)
        self.assertIsInstance(raised.exception, TransientError)
        self.assertIs(raised.exception.__cause__, error)
