"""Views of the benchmark instance only (its site.zcml includes this package).

Every view that changes something is a
:class:`~ploneintranet.asynctasks.browser.views.ProtectedJobView`: a POST with
a valid ``_authenticator``, like the product's own worker views. Effects are
timed in an after-commit hook and kept in this process, per ``run``, for
``@@bench-effects`` to report.
"""

from asynctasks_benchmarks.jobs import KINDS
from BTrees.Length import Length
import json
from plone.app.textfield.value import RichTextValue
from plone.protect.authenticator import createToken
from ploneintranet.asynctasks import tasks
from ploneintranet.asynctasks.browser.views import ProtectedJobView
from Products.CMFCore.utils import getToolByName
from Products.Five.browser import BrowserView
import threading
import time
import transaction
from zope.annotation.interfaces import IAnnotations


COUNTER_KEY = "asynctasks_benchmarks.writes"

_effects = {}
_effects_lock = threading.Lock()


def _record_effect(committed, run, enqueued_at, started):
    if committed:
        now = time.time()
        with _effects_lock:
            _effects.setdefault(run, []).append((now, now - enqueued_at, started - enqueued_at))


def _json(request, value):
    request.response.setHeader("Content-Type", "application/json")
    return json.dumps(value)


class TokenView(BrowserView):
    """``@@bench-token``: the current user's CSRF token, for the runner."""

    def __call__(self):
        return createToken()


def add_counter(context):
    """Give ``context`` the counter of ``@@bench-write`` (made up front, as
    concurrent first writes would conflict)."""
    IAnnotations(context)[COUNTER_KEY] = Length()


class WriteView(ProtectedJobView):
    """``@@bench-write``: the trivial write; adds one to a conflict-free
    counter on the context and times the commit."""

    def run(self):
        IAnnotations(self.context)[COUNTER_KEY].change(1)
        form = self.request.form
        started = time.time()
        enqueued_at = float(form.get("enqueued_at") or started)
        transaction.get().addAfterCommitHook(_record_effect, args=(form.get("run", ""), enqueued_at, started))
        return "written"


class EnqueueView(ProtectedJobView):
    """``@@bench-enqueue``: ``jobs`` jobs of ``kind`` (see
    :data:`~asynctasks_benchmarks.jobs.KINDS`) to
    ``@@bench-write``, each stamped with the time it was enqueued;
    ``queue`` sends them to another queue (to compare worker settings)."""

    def run(self):
        form = self.request.form
        job_class, options = KINDS[form["kind"]]
        if form.get("queue"):
            options = dict(options, queue=form["queue"])
        for number in range(int(form.get("jobs", 1))):
            data = {"run": form["run"], "n": number, "enqueued_at": repr(time.time())}
            job_class(self.context, self.request)(url="@@bench-write", data=data, **options)
        return "enqueued"


class EnqueueCostView(ProtectedJobView):
    """``@@bench-enqueue-cost``: enqueue ``jobs`` parked jobs and commit;
    return the seconds that took, the cost the user's request pays. With
    ``road=celery`` the same jobs go by Celery's own road (``apply_async`` in
    a kombu publish batch) instead of the Redis writer: an option the writer
    does not take (``priority=0``, which changes nothing on Redis) makes the
    delivery send them so."""

    def run(self):
        form = self.request.form
        job_class, options = KINDS["parked"]
        if form.get("road") == "celery":
            options = dict(options, priority=0)
        jobs = int(form.get("jobs", 1))
        started = time.perf_counter()
        for number in range(jobs):
            data = {"run": form["run"], "n": number}
            job_class(self.context, self.request)(url="@@bench-write", data=data, **options)
        transaction.commit()  # the jobs are sent in the commit
        return _json(self.request, time.perf_counter() - started)


class SaveView(ProtectedJobView):
    """``@@bench-save``: save ``text`` as the page's text, then reindex the
    page now (``reindex=sync``) or with a job (``reindex=deferred``)."""

    def run(self):
        form = self.request.form
        self.context.text = RichTextValue(form["text"], "text/html", "text/x-html-safe")
        if form.get("reindex") == "deferred":
            tasks.ReindexObject(self.context, self.request)()
        else:
            self.context.reindexObject()
        return "saved"


class IndexedView(BrowserView):
    """``@@bench-indexed?word=...``: is a page with that word in the catalog?"""

    def __call__(self):
        catalog = getToolByName(self.context, "portal_catalog")
        found = catalog.unrestrictedSearchResults(SearchableText=self.request.form["word"])
        return _json(self.request, len(found) > 0)


class EffectsView(BrowserView):
    """``@@bench-effects?run=...``: the writes of that run committed so far;
    ``times=1`` adds when each committed, its latency since enqueueing and
    how long after enqueueing the write view started (``reached``)."""

    def __call__(self):
        with _effects_lock:
            effects = list(_effects.get(self.request.form.get("run", ""), ()))
        result = {"count": len(effects)}
        if self.request.form.get("times"):
            result["committed"] = [committed for committed, _, _ in effects]
            result["latencies"] = [latency for _, latency, _ in effects]
            result["reached"] = [reached for _, _, reached in effects]
        return _json(self.request, result)
