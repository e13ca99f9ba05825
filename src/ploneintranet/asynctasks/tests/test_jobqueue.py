"""Jobs wait for the user's transaction: sent on commit, never on abort,
identical ones once, debounced ones once after a burst."""

import base64
from celery.result import AsyncResult
import contextlib
from plone.app.testing import login
from plone.app.testing import logout
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks.core import AbstractPost
from ploneintranet.asynctasks.tests.base import PipelineTestCase
from ploneintranet.asynctasks.tests.test_views import authenticator_in
from ploneintranet.asynctasks.tests.views import NOTES_KEY
from ploneintranet.asynctasks.tests.views import notes
import time
import transaction
from zope.annotation.interfaces import IAnnotations


class SlowDebouncedRecord(AbstractPost):
    """A job to ``@@test-record-job`` debounced long enough for a test to
    enqueue several in Plone before the first one runs."""

    task = celerytasks.post
    url = "@@test-record-job"
    debounce = 4


@contextlib.contextmanager
def logged_in(layer, user, cookies=None):
    """In Plone's own process, log ``user`` (name, password) in on the
    layer's request by HTTP Basic (with ``cookies``); yield the request.
    What is not committed inside is aborted."""
    username, password = user
    request = layer["request"]
    saved = getattr(request, "_auth", None), dict(request.cookies)
    request._auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    request.cookies.update(cookies or {})
    login(layer["portal"], username)
    try:
        yield request
    finally:
        transaction.abort()
        logout()
        request._auth = saved[0]
        request.cookies.clear()
        request.cookies.update(saved[1])


def enqueue_as(layer, user, job, context, **call):
    """Enqueue ``job(context, request)(**call)`` in Plone's own process as
    ``user`` (name, password); commit, and return the result."""
    with logged_in(layer, user) as request:
        result = job(context, request)(**call)
        transaction.commit()
        return result


class TestJobsWaitForTheCommit(PipelineTestCase):
    def result_of(self, response):
        self.assertEqual(response.status_code, 200, response.text[:500])
        return AsyncResult(response.text, app=celerytasks.app)

    def enqueue(self, query, auth=None):
        return self.get(f"{self.doc_url}/@@test-enqueue?{query}", auth=auth or self.owner)

    def test_worker_sees_what_the_transaction_saved(self):
        # The user's transaction stays open 1.5 s after enqueueing: a job sent
        # at once would reindex the old title before the new one is saved.
        url = f"{self.doc_url}/@@test-edit-and-reindex"
        token = authenticator_in(self.get(url, auth=self.owner).text)
        response = self.post(
            url,
            auth=self.owner,
            data={"_authenticator": token, "title": "Narwhal plan", "delay": "1.5"},
        )
        self.assertEqual(response.text, "edited")
        self.wait_for(lambda: self.catalog_titles("Narwhal"), "the reindex job")
        self.assertEqual(self.catalog_titles("Narwhal"), ["Narwhal plan"])

    def test_aborted_transaction_sends_nothing(self):
        response = self.enqueue("job=post&note=aborted&fail=1")
        self.assertEqual(response.status_code, 500)
        # A job sent later is received later: once it ran, the first would have.
        self.result_of(self.enqueue("job=post&note=after")).get(timeout=self.job_timeout)
        self.assertEqual(notes(self.fresh(self.doc)), ["after"])
        self.assertNotIn("note=aborted", self.celery_log())

    def test_identical_jobs_of_a_transaction_run_once(self):
        result = self.result_of(self.enqueue("job=post&note=twice&times=3"))
        self.assertEqual(result.get(timeout=self.job_timeout), 200)
        self.result_of(self.enqueue("job=post&note=end")).get(timeout=self.job_timeout)
        self.assertEqual(sorted(notes(self.fresh(self.doc))), ["end", "twice"])


class TestDebounce(PipelineTestCase):
    def test_a_burst_of_saves_runs_the_job_once_after_it(self):
        ids = []
        for _ in range(8):  # one save every 0.2 s, debounce 1 s
            response = self.get(f"{self.doc_url}/@@test-enqueue?job=debounced&note=burst", auth=self.owner)
            self.assertEqual(response.status_code, 200)
            ids.append(response.text)
            time.sleep(0.2)
        results = [AsyncResult(i, app=celerytasks.app) for i in ids]
        values = [r.get(timeout=self.job_timeout) for r in results]
        self.assertEqual(values, ["superseded"] * 7 + [200])
        self.assertEqual(notes(self.fresh(self.doc)), ["burst"])

    def test_two_users_jobs_on_one_object_both_run_each_as_its_user(self):
        alice = self.add_user("alice", local_roles=["Editor"])
        bob = self.add_user("bob", local_roles=["Editor"])
        # identical jobs but for their user: alice's first is replaced by her
        # second, bob's by neither
        results = [
            enqueue_as(self.layer, user, SlowDebouncedRecord, self.doc, data={"note": "same"})
            for user in (alice, bob, alice)
        ]
        values = [result.get(timeout=self.job_timeout) for result in results]
        self.assertEqual(values, ["superseded", 200, 200])
        self.assertEqual(notes(self.fresh(self.doc)), ["same", "same"])
        self.assertEqual(sorted(self.writers_of_notes()), ["alice", "bob"])

    def writers_of_notes(self):
        """The users whose requests changed the doc's notes, one per commit
        (Zope records the user of each transaction)."""
        transaction.abort()
        oid = IAnnotations(self.doc)[NOTES_KEY]._p_oid
        history = self.portal._p_jar.db().history(oid, size=10)
        return [entry["user_name"].split()[-1] for entry in history]
