"""The benchmark's jobs: the naive way to send one, and where each kind goes.

The worker loads this module with ``--include``; Plone imports it through
:mod:`~asynctasks_benchmarks.views`.
"""

from ploneintranet.asynctasks import tasks
from ploneintranet.asynctasks.celerytasks import app
from ploneintranet.asynctasks.core import AbstractPost
import requests


#: Queue that no worker consumes: the jobs of the enqueue cost measurement
#: wait there and are purged, so their execution does not disturb it.
PARKED_QUEUE = "bench-parked"
#: Queue of the worker with the package's default settings (``make run``).
DEFAULT_QUEUE = "bench-default"
#: Queue of the worker that runs the naive task.
NAIVE_QUEUE = "bench-naive"


@app.task(name="asynctasks_benchmarks.naive_post")
def naive_post(url, data=None, headers=None, cookies=None):
    """The naive way: a new connection per job (``requests.post``) and the
    result stored in the backend."""
    response = requests.post(
        url,
        data=data,
        headers=headers,
        cookies=cookies,
        timeout=30,
        allow_redirects=False,
    )
    response.raise_for_status()
    return response.status_code


class NaivePost(AbstractPost):
    task = naive_post


#: kind -> (task class, options of the call). ``post`` is the recommended
#: use: fire and forget (``ignore_result``), sent to the queue ``high``
#: that the tuned worker consumes.
KINDS = {
    "post": (tasks.Post, {"ignore_result": True}),
    "default": (tasks.Post, {"queue": DEFAULT_QUEUE}),
    "naive": (NaivePost, {"queue": NAIVE_QUEUE}),
    "parked": (tasks.Post, {"ignore_result": True, "queue": PARKED_QUEUE}),
}
