"""Step 2 of the add-on: its own Celery task, as the seed writes it (mutable
defaults included). A worker loads it with
``celery -A ploneintranet.asynctasks.celerytasks worker -I <this module>``."""

from ploneintranet.asynctasks.celerytasks import app
from ploneintranet.asynctasks.core import dispatch


@app.task
def write_note(url, data={}, headers={}, cookies={}):  # noqa: B006 (the seed's signature)
    """Write a note on a content object."""
    dispatch(url, data, headers, cookies)
