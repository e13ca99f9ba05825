``@@async-status`` has a sixth check, ``lost jobs``: the ledger's jobs in
flight, ``WARN`` while one that vanished is being sent again.
