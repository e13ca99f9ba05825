"""Jobs prepared by ``tasks`` travel Plone -> Redis -> worker -> Plone."""

from celery.result import AsyncResult
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks.core import AuthorizationError
from ploneintranet.asynctasks.tests.base import PipelineTestCase
from ploneintranet.asynctasks.tests.views import notes
from ploneintranet.asynctasks.tests.views import received_task_name
import transaction


class TestReindexObject(PipelineTestCase):
    def test_changed_title_is_found_only_after_the_job_ran(self):
        self.doc.title = "Zebra quilt"  # changed without reindexing
        transaction.commit()
        self.assertEqual(self.catalog_titles("Zebra"), [])

        response = self.get(f"{self.doc_url}/@@test-enqueue?job=reindex", auth=self.owner)
        self.assertEqual(response.status_code, 200, response.text[:500])

        result = AsyncResult(response.text, app=celerytasks.app)
        self.assertEqual(result.get(timeout=self.job_timeout), 200)
        self.assertEqual(self.catalog_titles("Zebra"), ["Zebra quilt"])

    def test_user_who_may_not_modify_is_refused_and_not_retried(self):
        reader = self.add_user("reader", local_roles=["Reader"])
        self.doc.title = "Quokka notes"
        transaction.commit()

        response = self.get(f"{self.doc_url}/@@test-enqueue?job=reindex", auth=reader)
        self.assertEqual(response.status_code, 200, response.text[:500])
        result = AsyncResult(response.text, app=celerytasks.app)
        result.get(timeout=self.job_timeout, propagate=False)

        self.assertEqual(result.state, "FAILURE")
        self.assertIsInstance(result.result, AuthorizationError)
        self.assertIn("reader", str(result.result))
        self.assertEqual(self.catalog_titles("Quokka"), [])
        log = self.celery_log()
        self.assertNotIn(f"Task {celerytasks.reindex_object.name}[{result.id}] retry", log)
        self.assertIn(result.id, log)
        self.assertNotIn(reader[1], log)  # never a password in the log


class TestPost(PipelineTestCase):
    def test_post_round_trip_writes_the_posted_data(self):
        response = self.get(f"{self.doc_url}/@@test-enqueue?job=post&note=hello", auth=self.owner)
        self.assertEqual(response.status_code, 200, response.text[:500])
        result = AsyncResult(response.text, app=celerytasks.app)
        self.assertEqual(result.get(timeout=self.job_timeout), 200)
        self.assertEqual(notes(self.fresh(self.doc)), ["hello"])

    def test_job_carries_the_task_name_header_for_routing(self):
        response = self.get(f"{self.doc_url}/@@test-enqueue?job=post&note=routed", auth=self.owner)
        AsyncResult(response.text, app=celerytasks.app).get(timeout=self.job_timeout)
        self.assertEqual(received_task_name(self.fresh(self.doc)), celerytasks.post.name)
