"""ploneintranet.asynctasks: offload slow Plone work to Celery.

The package follows the three steps of an async job:

1. :mod:`ploneintranet.asynctasks.tasks` prepares the job in Plone,
2. :mod:`ploneintranet.asynctasks.celerytasks` hands it to Celery,
3. :mod:`ploneintranet.asynctasks.browser.views` does the work back in Plone,

with :mod:`ploneintranet.asynctasks.core` as the engine.
"""
