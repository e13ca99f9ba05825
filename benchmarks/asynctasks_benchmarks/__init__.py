"""The benchmarks of ``make bench`` and ``make bench-push``: real processes,
one table, one JSON file.

A development package of the git checkout (benchmarks/, installed in
editable mode by ``make install``), not part of ploneintranet.asynctasks'
distribution.

- :mod:`.runner`: the command; starts everything, measures, reports.
- :mod:`.services`: Redis, a Plone instance on a FileStorage, Celery workers.
- :mod:`.site`: builds the benchmark's Plone site (its own process).
- :mod:`.client`: the logged-in browser of the benchmark.
- :mod:`.measure`: the five measurements.
- :mod:`.report`: the targets, the table and the JSON file.
- :mod:`.views` and :mod:`.jobs`: the views and jobs measured, loaded only
  by the benchmark's instance (never by the add-on's configure.zcml).
- :mod:`.push`: the benchmark of the push server (``make bench-push``).

See docs/benchmarks.rst.
"""
