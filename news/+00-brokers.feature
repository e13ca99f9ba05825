The queue can be swapped per deployment (issue 12): plain Redis, Redis with
Sentinel (``BROKER_URL=sentinel://h:p;sentinel://h:p;...`` with
``BROKER_TRANSPORT_OPTIONS={"master_name": ...}``) and RabbitMQ
(``amqp://``, with a Redis ``CELERY_RESULT_BACKEND`` that keeps the results,
debounce keys and push channels). ``BROKER_TRANSPORT_OPTIONS`` and
``RESULT_BACKEND_TRANSPORT_OPTIONS`` are JSON objects merged into Celery's
settings; a combination that cannot work is refused at start-up with a
message saying what to set (``celeryconfig.broker_settings``). Every Redis
connection of the package (ledger, debounce, the vote's check, push) follows
the Sentinel master (``broker.client_for``). RabbitMQ gets durable quorum
queues behind topic exchanges and publisher confirms; delays wait in
RabbitMQ (Celery's native delayed delivery; a delay under a second becomes
one); no ledger, and ``@@async-status``'s "lost jobs" is OK and says why.
The longest delay is the broker's (``broker.longest_delay``).
``ASYNC_REDIS_WAIT_REPLICAS`` (Redis ``WAIT`` in the round trip that writes
a transaction's jobs) and ``ASYNC_SENTINEL_FAILOVER_WAIT`` (jobs sent as
the master dies are sent again to the promoted one) make a Sentinel failover
lose no committed job. Tests: the broker-independent pipeline tests run again
on a private RabbitMQ vhost and on a master, replica and three sentinels of
their own (``tests/test_rabbitmq.py``, ``tests/test_sentinel.py``,
``tests/test_brokers.py``), with a Sentinel failover under steady traffic
(45 of 1110 jobs lost with the replica half a second behind, none with the
two settings); ``make test`` starts RabbitMQ (``make rabbitmq-server``);
``scripts/kill_workers.py --broker redis|sentinel|rabbitmq|URL``: 20,000
jobs, 40 SIGKILLs, none missing on each (docs/reliability.rst).
