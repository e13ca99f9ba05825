One road to the broker (issue 11). A ``Job`` value type (``wire.Job``)
replaces the 5-tuples; the after-commit data manager hands a transaction's
jobs to a delivery chosen once per broker (``delivery.delivery_for``:
eager, Celery's ``apply_async`` in one kombu publish batch, or for Redis
the ledger entries, debounce keys and messages in one pipeline). Every road
(``delay()``, Celery's retries, the ledger's resends) goes through
``JobTask.apply_async`` and the delivery: the ledger's thread-local flag is
gone. The only writer of kombu's bytes is ``rediswriter`` (kept because
``make bench`` measured Celery's road at 1.6 times its cost per job); a
test compares its bytes with ``apply_async``'s for every option it takes.
The sweep's Lua is registered once (``EVALSHA``), every key it touches in
``KEYS``, and reads messages with ``cjson`` and kombu's own priority names.
