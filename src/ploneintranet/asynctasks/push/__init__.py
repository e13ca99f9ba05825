"""Websocket push: tell a user's browser that a job of theirs finished.

- :mod:`.messages` publishes a message to the user's Redis channel (used by
  the Celery tasks);
- :mod:`.server` is the Tornado websocket server that browsers connect to
  (run it with ``python -m ploneintranet.asynctasks.push``);
- :mod:`.browser` is the Plone end (``configure.zcml``): ``@@async-push-user``
  and the viewlet that tells the page where the push server is. Only Zope
  loads it, through the ZCML: nothing above imports it.
- ``static/pat-push.js`` is the Patternslib pattern ``push``, loaded by
  Plone's resource registry (the bundle ``ploneintranet-asynctasks-push``).
"""
