"""Shared helpers of the tests that run the real pipeline."""

import json
from plone import api
from plone.app.testing import SITE_OWNER_NAME
from plone.app.testing import SITE_OWNER_PASSWORD
from plone.app.testing import setRoles
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks.testing import REDIS_SERVER_FIXTURE
from ploneintranet.asynctasks.testing import wait_until
from ploneintranet.asynctasks.tests.layers import PIPELINE_TESTING
import redis
import requests
import transaction
import unittest


class PipelineTestCase(unittest.TestCase):
    """A Plone site served over HTTP, with Redis and a Celery worker."""

    layer = PIPELINE_TESTING
    #: Seconds a job may take to travel through the pipeline in a test.
    job_timeout = 30

    def setUp(self):
        self.portal = self.layer["portal"]
        self.portal_url = self.portal.absolute_url()
        self.owner = (SITE_OWNER_NAME, SITE_OWNER_PASSWORD)
        setRoles(self.portal, "test_user_1_", ["Manager"])
        self.doc = api.content.create(container=self.portal, type="Document", id="doc", title="Plain page")
        transaction.commit()
        self.doc_url = self.doc.absolute_url()

    def add_user(self, username, roles=("Member",), local_roles=()):
        """Create a user (password ``secret-<username>``); local roles on doc."""
        password = f"secret-{username}"
        api.user.create(
            email=f"{username}@example.com",
            username=username,
            password=password,
            roles=list(roles),
        )
        if local_roles:
            api.user.grant_roles(username=username, obj=self.doc, roles=list(local_roles))
        transaction.commit()
        return (username, password)

    def get(self, url, auth=None, **kwargs):
        return requests.get(url, auth=auth, timeout=60, allow_redirects=False, **kwargs)

    def post(self, url, auth=None, **kwargs):
        return requests.post(url, auth=auth, timeout=60, allow_redirects=False, **kwargs)

    def fresh(self, obj):
        """``obj`` as the database holds it now, after other processes' commits."""
        transaction.abort()
        return obj

    def catalog_titles(self, text):
        transaction.abort()
        catalog = self.portal.portal_catalog
        return [b.Title for b in catalog.unrestrictedSearchResults(Title=text)]

    def wait_for(self, condition, message):
        return wait_until(condition, self.job_timeout, interval=0.1, message=message)

    def celery_log(self):
        with open(self.layer["celery_log"], errors="replace") as log:
            return log.read()


class BrokerTestCase(unittest.TestCase):
    """The Celery app on a private, empty Redis broker (no worker)."""

    layer = REDIS_SERVER_FIXTURE

    def setUp(self):
        self.app = celerytasks.app
        self.redis = redis.Redis.from_url(self.layer["redis_url"], socket_timeout=5)
        self.redis.flushdb()

    def tearDown(self):
        self.redis.flushdb()
        self.redis.close()

    def ids_in(self, queue):
        """The task ids of the messages in ``queue``, the first to be taken first."""
        return [json.loads(raw)["headers"]["id"] for raw in reversed(self.redis.lrange(queue, 0, -1))]
