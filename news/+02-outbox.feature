A broker outage no longer blocks editing (issue 13): a save whose broker
does not answer is kept, and its jobs wait in the site's outbox (written in
the same transaction), sent oldest first by the first request after the
broker answers again; two instances never send them both.
``ASYNC_WHEN_BROKER_DOWN=refuse`` keeps the old behaviour (the save fails).
Tested with an Image uploaded through Plone's add form while Redis is
stopped: saved, and its preview made once Redis is back.
