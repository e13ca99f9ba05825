"""The benchmark of ``make bench``: real processes, one table, one JSON file.

- :mod:`.runner`: the command; starts everything, measures, reports.
- :mod:`.services`: Redis, a Plone instance on a FileStorage, Celery workers.
- :mod:`.site`: builds the benchmark's Plone site (its own process).
- :mod:`.client`: the logged-in browser of the benchmark.
- :mod:`.measure`: the five measurements.
- :mod:`.report`: the targets, the table and the JSON file.
- :mod:`.views` and :mod:`.jobs`: the views and jobs measured, loaded only
  by the benchmark's instance (never by the package's configure.zcml).

See docs/benchmarks.rst.
"""
