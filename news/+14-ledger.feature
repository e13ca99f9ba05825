The ledger (``ploneintranet.asynctasks.ledger``): a worker killed between
taking a job off Redis and recording it as taken no longer loses it. Jobs
are written into a ledger in Redis before they are published and crossed
out when finished; a sweep in the worker (``ASYNC_SWEEP_INTERVAL``, 10 s)
sends again, with the same task id, a job found neither in a queue nor
taken on two sweeps in a row. Found by a CI run in which ``test_faults``
missed jobs after a SIGKILL; measured before the fix: 6 of 20,000 jobs
lost over 25 SIGKILLs.
