``make faults``: the fault matrix (``scripts/fault_matrix.py``, run by
``.ci/run``). Two Plone instances on ZEO, then on RelStorage in a PostgreSQL
cluster of its own, HAProxy routing jobs to the worker instance, two Celery
workers and a client saving Images through Plone's add form, while the
worker instance is SIGKILLed, Redis is stopped for 30 s, a Celery worker is
SIGKILLed, and the database server is restarted. It prints jobs committed,
arrived, run twice, saves refused and jobs kept in the outbox, and fails on a
lost job or a refused save. ``buildout.cfg`` offers ZEO
(``zeo-client``, ``zeo-address``) and RelStorage (``rel-storage``) beside the
FileStorage; docs/deployment.rst, "When one machine is not enough", has the
measured table.
