"""ZEO clients forget the object ids they fetched ahead when they reconnect.

ZEO's ``ClientStorage`` (6.2 and before) asks the server for new object ids
100 at a time and hands them out one by one; those it has not used yet it
keeps when the connection to the server breaks. A ZEO server that restarts
knows only the ids of committed objects, so it hands the unused ones out
again, to the other instances: two instances then give new objects the same
id. Found by the fault matrix (``make faults``, ZEO server restarted under
steady saves): conflict errors on new objects, "A different object already
has the same oid", ``POSKeyError`` for blob files, and preview jobs failing
until their retries ran out (2 of 30 lost).

:func:`forget_prefetched_oids` makes every ``ClientStorage`` of the process
drop them when it (re)connects: a restarted server then gives each instance
ids no other has. Subscribed to Zope's ``IDatabaseOpenedWithRoot``
(configure.zcml); nothing happens where ZEO is not installed.
"""

import logging


try:
    from ZEO.ClientStorage import ClientStorage
except ImportError:  # no ZEO: no client to mend
    ClientStorage = None


logger = logging.getLogger("ploneintranet.asynctasks")


def _notify_connected(self, conn, info):
    # ids fetched from the server before the connection broke: a server that
    # restarted meanwhile gives them to other clients too
    if self._oids:
        logger.info("ZEO client %s reconnected: %d new object ids fetched before dropped", self, len(self._oids))
        del self._oids[:]
    return _notify_connected.original(self, conn, info)


def forget_prefetched_oids(event=None):
    """Make ``ZEO.ClientStorage.ClientStorage`` drop the new object ids it
    fetched ahead whenever it (re)connects to its server. Safe to call more
    than once; does nothing without ZEO."""
    if ClientStorage is None or ClientStorage.notify_connected is _notify_connected:
        return
    _notify_connected.original = ClientStorage.notify_connected
    ClientStorage.notify_connected = _notify_connected
