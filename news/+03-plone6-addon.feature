A Plone 6 add-on for Classic UI and Volto (issue 14, items 1-3 and 6).
``make run``'s site gets the Classic UI theme (``plonetheme.barceloneta:default``,
as Plone's "Create a Classic Plone site" form; ``scripts/create_site.py``
also adds it to an existing site), checked in headless Chromium. With
plone.restapi installed: ``GET @async-status`` (Managers; the checks and
JSON of ``@@async-status?format=json``, 503 unless all OK) and
``@controlpanels/async-tasks``; a test logs in with ``@login`` and
``PATCH``es a Document with the Bearer token, and the job its save queues
runs as that user. *Site Setup* > *Async tasks* edits the url mapping (an
internal url jobs may not go to is refused) and the previews switch, with
the broker, worker, queues and allowed origins shown read-only; the upgrade
step 1003 -> 1004 adds it, uninstalling removes it. README: "Using it with
Volto"; docs: ``volto.rst``.
