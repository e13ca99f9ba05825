"""Layers of this package's own tests: the public ones plus test-only views."""

from plone.app.testing import FunctionalTesting
from plone.app.testing import PloneSandboxLayer
from plone.testing.zope import WSGI_SERVER_FIXTURE
from ploneintranet.asynctasks.testing import ASYNC_FIXTURE
from ploneintranet.asynctasks.testing import CELERY_WORKER_FIXTURE
import ploneintranet.asynctasks.tests


class TestViewsLayer(PloneSandboxLayer):
    defaultBases = (ASYNC_FIXTURE,)

    def setUpZope(self, app, configurationContext):
        self.loadZCML(package=ploneintranet.asynctasks.tests)


TEST_VIEWS_FIXTURE = TestViewsLayer()

PIPELINE_TESTING = FunctionalTesting(
    bases=(CELERY_WORKER_FIXTURE, TEST_VIEWS_FIXTURE, WSGI_SERVER_FIXTURE),
    name="ploneintranet.asynctasks:Pipeline",
)
