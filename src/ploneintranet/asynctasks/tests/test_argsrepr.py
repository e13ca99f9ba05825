"""No road to the broker shows a job's credentials to monitors.

Celery copies ``argsrepr`` and ``kwargsrepr`` into a message's headers (and
its properties), where Flower, Celery's events and the worker's log show
them. A job's arguments carry its credentials: the plone.protect
authenticator, the job token (or the user's ``__ac`` cookie or Authorization
header, with ``ASYNC_CREDENTIALS=forward``). Each test sends a job by one
road, reads the real message from Redis and checks that nothing but the
arguments themselves holds any of those values.
"""

import base64
from celery import signals
import http.server
import json
from plone.app.testing import TEST_USER_NAME
from plone.app.testing import TEST_USER_PASSWORD
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks import ledger
from ploneintranet.asynctasks import tasks
from ploneintranet.asynctasks.delivery import delivery_for
from ploneintranet.asynctasks.tests.base import PipelineTestCase
from ploneintranet.asynctasks.tests.test_jobqueue import logged_in
from ploneintranet.asynctasks.wire import AUTHENTICATOR_FIELD
from ploneintranet.asynctasks.wire import TASK_NAME_HEADER
from ploneintranet.asynctasks.wire import USER_HEADER
from ploneintranet.asynctasks.wire import Job
import redis
import threading
import transaction
from unittest import mock
import uuid


#: A queue no worker consumes: its messages wait there for the test to read.
PARKED = "argsrepr-parked"
#: Fake credentials that a job may carry, distinctive enough to search for.
FAKE_COOKIE = "fake-ac-cookie-Q7wX2"
FAKE_AUTHORIZATION = "Bearer fake-bearer-Z9kV4"
FAKE_AUTHENTICATOR = "fake-authenticator-M3pL8"


def readable(message):
    """A kombu message as Redis holds it (JSON), its body decoded."""
    message = json.loads(message) if isinstance(message, (str, bytes)) else message
    message["body"] = json.loads(base64.b64decode(message["body"]))
    return message


def credentials_in(message):
    """The values in a job's arguments that act as its user."""
    url, data, headers, cookies = message["body"][0]
    shown = (TASK_NAME_HEADER, USER_HEADER)
    values = [data.get(AUTHENTICATOR_FIELD)]
    values += [value for name, value in headers.items() if name not in shown]
    values += list(cookies.values())
    return {str(value) for value in values if value}


def strings_in(value):
    """Every string in a JSON value, keys included."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)
    elif value is not None:
        yield str(value)


def fake_job(url):
    """A job's arguments with fake credentials of every kind."""
    return (
        url,
        {AUTHENTICATOR_FIELD: FAKE_AUTHENTICATOR, "note": "fake"},
        {"Authorization": FAKE_AUTHORIZATION, TASK_NAME_HEADER: celerytasks.post.name},
        {"__ac": FAKE_COOKIE},
    )


class ArgsreprTestCase(PipelineTestCase):
    def setUp(self):
        super().setUp()
        self.redis = redis.Redis.from_url(self.layer["redis_url"], socket_timeout=5)
        self.addCleanup(self.redis.close)
        self.addCleanup(self.clean_parked)
        self.user = (TEST_USER_NAME, TEST_USER_PASSWORD)

    def clean_parked(self):
        """Take the parked jobs out of their queue and of the ledger, so
        that the worker's sweep does not send them again."""
        for message in self.parked():
            ledger.forget(celerytasks.app, message["headers"]["id"])
        self.redis.delete(PARKED)

    def parked(self):
        """The messages waiting in :data:`PARKED`, the first sent first."""
        return [readable(raw) for raw in reversed(self.redis.lrange(PARKED, 0, -1))]

    def post(self, request, **options):
        """Enqueue a Post to ``@@test-record-job`` that also carries a fake
        ``__ac`` cookie (as with ``ASYNC_CREDENTIALS=forward``)."""
        return tasks.Post(self.doc, request)(
            url="@@test-record-job",
            data={"note": uuid.uuid4().hex},
            cookies={"__ac": FAKE_COOKIE},
            **options,
        )

    def assert_shows_url_only(self, message):
        """Neither ``argsrepr``, ``kwargsrepr`` nor any other header or
        property of ``message`` holds a credential of its job."""
        credentials = credentials_in(message)
        self.assertIn(FAKE_COOKIE, credentials)
        url = message["body"][0][0]
        self.assertEqual(message["headers"]["argsrepr"], f"({url!r}, ...)")
        self.assertEqual(message["headers"]["kwargsrepr"], "{}")
        outside = list(strings_in([message["headers"], message["properties"]]))
        for credential in credentials:
            leaks = [text for text in outside if credential in text]
            self.assertEqual(leaks, [], f"a credential of the job is outside its arguments: {leaks}")


class TestAfterCommit(ArgsreprTestCase):
    def test_in_one_round_trip(self):
        with logged_in(self.layer, self.user) as request:
            self.post(request, queue=PARKED)
            transaction.commit()
        # the delivery hides the arguments, whatever argsrepr a job is given
        options = {"task_id": "direct", "queue": PARKED, "argsrepr": "all of it"}
        delivery_for(celerytasks.app).send([Job(celerytasks.post, *fake_job(self.doc_url), options=options)])
        messages = self.parked()
        self.assertEqual(len(messages), 2)
        self.assertIn(FAKE_AUTHORIZATION, credentials_in(messages[1]))
        for message in messages:
            self.assert_shows_url_only(message)

    def test_through_apply_async_one_by_one_and_in_a_batch(self):
        heard = []

        def monitor(headers=None, **kwargs):
            heard.append(headers)

        # what a publish listener is shown
        signals.before_task_publish.connect(monitor)
        self.addCleanup(signals.before_task_publish.disconnect, monitor)
        with logged_in(self.layer, self.user) as request:
            self.post(request, queue=PARKED)
            transaction.commit()  # one job: sent by itself
            self.post(request, queue=PARKED)
            self.post(request, queue=PARKED)
            transaction.commit()  # two jobs: sent in a batch
        messages = self.parked()
        self.assertEqual(len(messages), 3)
        self.assertEqual(len(heard), 3)
        credentials = set().union(*map(credentials_in, messages))
        for message in messages:
            self.assert_shows_url_only(message)
        for headers in heard:  # what the listener, a monitor, was shown
            self.assertFalse([text for text in strings_in(headers) for c in credentials if c in text])


class TestOtherRoads(ArgsreprTestCase):
    def test_immediate(self):
        with logged_in(self.layer, self.user) as request:
            self.post(request, immediate=True, queue=PARKED)
        (message,) = self.parked()
        self.assert_shows_url_only(message)

    def test_sent_again_by_the_ledger(self):
        task_id = uuid.uuid4().hex
        self.addCleanup(ledger.forget, celerytasks.app, task_id)
        job = Job.create(celerytasks.post, fake_job(self.doc_url), {"task_id": task_id, "queue": PARKED})
        pipe = self.redis.pipeline()
        with mock.patch.object(celeryconfig, "ASYNC_SWEEP_INTERVAL", 0.1):  # due at once
            ledger.add_to(pipe, celerytasks.app, [job])  # written, not sent
        pipe.execute()
        # neither waiting nor taken on two sweeps: the worker sends it again
        (message,) = self.wait_for(self.parked, "the worker's sweep to send the job again")
        self.assertEqual(message["headers"]["id"], task_id)
        self.assert_shows_url_only(message)

    def test_retried_by_celery(self):
        server = RetryingServer()
        self.addCleanup(server.stop)
        url = f"{server.url}/plone/doc/@@test-record-job"
        # sent as the job queue sends it: the first message shows the url only
        result = celerytasks.post.apply_async(fake_job(url), argsrepr=f"({url!r}, ...)")
        self.wait_for(server.second_post.is_set, "the retried job to reach the server")
        # the worker holds the retried message in kombu's unacked hash until it is done
        taken = [readable(json.loads(raw)[0]) for raw in self.redis.hvals("unacked")]
        (retried,) = [message for message in taken if message["headers"]["id"] == result.id]
        self.assertEqual(retried["headers"]["retries"], 1)
        self.assert_shows_url_only(retried)
        server.release.set()
        self.assertEqual(result.get(timeout=self.job_timeout), 200)


class RetryingServer(http.server.ThreadingHTTPServer):
    """A loopback HTTP server in Plone's place: it answers the first POST
    503, so the job is retried, and holds the second until :attr:`release`
    is set, then answers 200."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _RetryingHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.posts = 0
        self.lock = threading.Lock()
        self.second_post = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.release.set()
        self.shutdown()
        self.server_close()


class _RetryingHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            self.server.posts += 1
            first = self.server.posts == 1
        if not first:
            self.server.second_post.set()
            self.server.release.wait(60)
        self.send_response(503 if first else 200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format, *args):
        pass  # the test reads what it needs from the server's attributes
