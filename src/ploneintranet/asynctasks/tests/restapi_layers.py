"""Layers of the plone.restapi tests: the add-on's site with plone.restapi
installed (its ZCML and ``plone.restapi:default``: the JWT login, as on a
Volto site), and ``restapi.zcml``'s test add-on."""

from plone.app.testing import FunctionalTesting
from plone.app.testing import PloneSandboxLayer
from plone.app.testing import applyProfile
import plone.restapi
from plone.testing.zope import WSGIServer
from ploneintranet.asynctasks.testing import ASYNC_FIXTURE
from ploneintranet.asynctasks.testing import CELERY_WORKER_FIXTURE
import ploneintranet.asynctasks.tests


class RestApiLayer(PloneSandboxLayer):
    """The add-on's site with plone.restapi installed, and the test add-on."""

    defaultBases = (ASYNC_FIXTURE,)

    def setUpZope(self, app, configurationContext):
        self.loadZCML(package=plone.restapi)
        self.loadZCML(name="restapi.zcml", package=ploneintranet.asynctasks.tests)

    def setUpPloneSite(self, portal):
        applyProfile(portal, "plone.restapi:default")


RESTAPI_FIXTURE = RestApiLayer()

#: A WSGI server started once plone.restapi is set up. The shared
#: WSGI_SERVER_FIXTURE stays up between layers: after the push tests it
#: answered 404 to plone.restapi's services for its first requests.
RESTAPI_WSGI_SERVER = WSGIServer(bases=(RESTAPI_FIXTURE,), name="ploneintranet.asynctasks:RestApiWSGIServer")

#: plone.restapi's site behind a WSGI server, with Redis and a Celery worker.
RESTAPI_TESTING = FunctionalTesting(
    bases=(CELERY_WORKER_FIXTURE, RESTAPI_WSGI_SERVER),
    name="ploneintranet.asynctasks:RestApi",
)
