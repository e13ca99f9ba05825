"""Plone instances ride out a restart of their database server.

Two mends of the database clients, both found by the fault matrix
(``make faults``: the database server restarted under steady saves), both
applied at Zope's start (:func:`mend_storages`, subscribed to
``IDatabaseOpenedWithRoot`` in configure.zcml); each does nothing where its
storage is not installed.

**ZEO** (6.2 and before): a ``ClientStorage`` asks the server for new object
ids 100 at a time and hands them out one by one; those it has not used yet it
keeps when the connection breaks. A restarted server knows only the ids of
committed objects and hands the unused ones out again, to the other
instances, which then give new objects the same id: conflict errors on new
objects, "A different object already has the same oid", ``POSKeyError`` for
blob files, preview jobs failing until their retries ran out (2 of 30 lost).
Mended: a client drops them when it (re)connects.

**RelStorage**: while PostgreSQL (or MySQL, Oracle) restarts, every request
that opens a connection to it fails at once with the driver's
``OperationalError``, which Zope does not retry: the user's save is refused
(``500``), where a ZEO client waits for its server. Mended: opening a
connection waits for the database, up to ``ASYNC_DATABASE_WAIT`` seconds
(60), and a connection lost while a transaction is being committed (before
its commit in the database, so nothing was written) raises
:class:`DatabaseRestarted`, a ``TransientError``: Zope runs the request
again, as after a conflict.
"""

import logging
from ploneintranet.asynctasks.celeryconfig import ASYNC_DATABASE_WAIT
import time
from transaction.interfaces import TransientError


try:
    from ZEO.ClientStorage import ClientStorage
except ImportError:  # no ZEO: no client to mend
    ClientStorage = None
try:
    from relstorage.adapters.connections import AbstractManagedConnection
    from relstorage.storage import RelStorage
except ImportError:  # no RelStorage: nothing to mend
    RelStorage = None


logger = logging.getLogger("ploneintranet.asynctasks")
#: Seconds between two attempts to reach a database that is down.
RECONNECT_EVERY = 0.25


class DatabaseRestarted(TransientError):
    """The connection to the database was lost during a commit, before the
    database committed: nothing was written, and the request may run again."""


def mend_storages(event=None):
    """Apply both mends (safe to call more than once)."""
    forget_prefetched_oids()
    wait_for_the_database()


def _notify_connected(self, conn, info):
    # ids fetched from the server before the connection broke: a server that
    # restarted meanwhile gives them to other clients too
    if self._oids:
        logger.info("ZEO client %s reconnected: %d new object ids fetched before dropped", self, len(self._oids))
        del self._oids[:]
    return _notify_connected.original(self, conn, info)


def forget_prefetched_oids():
    """Make ``ZEO.ClientStorage.ClientStorage`` drop the new object ids it
    fetched ahead whenever it (re)connects to its server."""
    if ClientStorage is None or ClientStorage.notify_connected is _notify_connected:
        return
    _notify_connected.original = ClientStorage.notify_connected
    ClientStorage.notify_connected = _notify_connected


def _open_connection(self):
    """RelStorage's ``_open_connection``, retried while the database is down."""
    started = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        try:
            opened = _open_connection.original(self)
        except self.connmanager.driver.disconnected_exceptions as error:
            if time.monotonic() - started >= ASYNC_DATABASE_WAIT:
                raise
            if attempts == 1:
                logger.warning("the database does not answer (%s): waiting up to %.0f s", error, ASYNC_DATABASE_WAIT)
            time.sleep(RECONNECT_EVERY)
        else:
            if attempts > 1:
                logger.info("the database answers again after %.1f s", time.monotonic() - started)
            return opened


def _restartable(method):
    def commit_phase(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except self._adapter.connmanager.driver.disconnected_exceptions as error:
            raise DatabaseRestarted(f"lost the database during {method.__name__}: {error}") from error

    commit_phase.original = method
    commit_phase.__name__ = method.__name__
    return commit_phase


def wait_for_the_database():
    """Make RelStorage wait for its database when it opens a connection, and
    make a connection lost during ``tpc_begin`` or ``tpc_vote`` a
    :class:`DatabaseRestarted`. ``tpc_finish`` is left alone: there the
    database may have committed, and running the request again could save
    twice."""
    if RelStorage is None or AbstractManagedConnection._open_connection is _open_connection:
        return
    _open_connection.original = AbstractManagedConnection._open_connection
    AbstractManagedConnection._open_connection = _open_connection
    RelStorage.tpc_begin = _restartable(RelStorage.tpc_begin)
    RelStorage.tpc_vote = _restartable(RelStorage.tpc_vote)
