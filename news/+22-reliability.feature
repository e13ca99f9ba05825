Reliability: jobs join the Zope transaction as a data manager that checks
the broker in the vote (an unreachable broker fails the save as a whole) and
publishes after the commit, in one round trip; savepoints are honoured;
``debounce`` collapses bursts across transactions; delays beyond the Redis
visibility timeout and oversized jobs are refused; jobs of a killed worker
return after the visibility timeout. Fault tests kill the worker, stop
Plone and Redis, and raise ``ConflictError``; a table of 55 hostile inputs
checks for clear errors, no writes and no foreign requests.
