"""Hostile input is refused: a clear error, nothing written, nothing sent
off-site.

One table of attacks on every door of the pipeline: the worker views over
HTTP, the enqueueing API in Plone, and the broker (jobs that bypass Plone),
for the layer's worker and for a worker with ``ASYNC_ALLOWED_ORIGINS``. Every
hostile job is otherwise valid (real credentials, a real authenticator, a view
that would write), so only the refusal stops it. For each row the test checks
the refusal, that the database has no new transaction, and that a loopback
listener, the stand-in for every foreign origin, got no connection.
"""

import base64
import binascii
from celery.exceptions import NotRegistered
from celery.result import AsyncResult
import datetime
import json
import logging
import os
from plone import api
from plone.app.testing import login
from plone.app.testing import logout
from plone.keyring.interfaces import IKeyManager
from plone.session import tktauth
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks import jobtoken
from ploneintranet.asynctasks import ledger
from ploneintranet.asynctasks import tasks
from ploneintranet.asynctasks.browser.views import CHECKSUM_KEY
from ploneintranet.asynctasks.core import AbstractPost
from ploneintranet.asynctasks.core import AsyncTaskError
from ploneintranet.asynctasks.core import AuthorizationError
from ploneintranet.asynctasks.core import JobRefused
from ploneintranet.asynctasks.testing import free_port
from ploneintranet.asynctasks.testing import start_celery_worker
from ploneintranet.asynctasks.testing import stop_process
from ploneintranet.asynctasks.tests.base import PipelineTestCase
from ploneintranet.asynctasks.tests.test_routing import _load_script
from ploneintranet.asynctasks.tests.test_views import authenticator_in
from ploneintranet.asynctasks.tests.views import NOTES_KEY
from ploneintranet.asynctasks.tests.views import notes
from ploneintranet.asynctasks.wire import TOKEN_HEADER
from ploneintranet.asynctasks.wire import masked_url
from ploneintranet.asynctasks.wire import origin
from Products.SiteAccess.VirtualHostMonster import manage_addVirtualHostMonster
import redis
import requests
import shutil
import socket
import tempfile
import threading
import time
import transaction
from unittest import mock
from urllib.parse import urlsplit
from zope.annotation.interfaces import IAnnotations
from zope.component import getUtility


TOKEN = "_authenticator"
FORGED = "f" * 40
ALLOWLIST_QUEUE = "hostile-allowlist"
CRLF_TASK_NAME = "ploneintranet.asynctasks.tests.hostile\r\nX-Injected: yes"


@celerytasks.app.task(name=CRLF_TASK_NAME, shared=False)
def task_with_crlf_name(url, data=None, headers=None, cookies=None):
    """Never runs: a job of a task with this name must not be queued."""


class CrlfNamedPost(AbstractPost):
    task = task_with_crlf_name


def basic(username, password):
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class LoopbackListener:
    """A TCP server on 127.0.0.1 that records who connects, and answers nothing."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stopped.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    received = conn.recv(4096)
                except OSError:
                    received = b""
            self.connections.append((peer, received))

    def stop(self):
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


class LogRecords(logging.Handler):
    """Everything this process logs while installed, formatted."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


# --- what a row expects ------------------------------------------------------


def status(*codes, text=None):
    """An HTTP answer with one of ``codes`` (and ``text`` in its body)."""

    def check(test, outcome):
        test.assertIsInstance(outcome, requests.Response, outcome)
        test.assertIn(outcome.status_code, codes, outcome.text[:300])
        if text:
            test.assertIn(text, outcome.text)
        return f"HTTP {outcome.status_code}"

    return check


def raises(error_class, text):
    """Refused in Plone: ``error_class`` with ``text`` in its message."""

    def check(test, outcome):
        test.assertIsInstance(outcome, error_class, f"expected {error_class.__name__}, got {outcome!r}"[:500])
        test.assertIn(text, str(outcome))
        return str(outcome)

    return check


def job_fails(error_class, text):
    """The job ran and failed with ``error_class``, ``text`` in its message."""

    def check(test, outcome):
        test.assertIsInstance(outcome, AsyncResult, outcome)
        outcome.get(timeout=test.job_timeout, propagate=False)
        test.assertEqual(outcome.state, "FAILURE", outcome.result)
        test.assertIsInstance(outcome.result, error_class, outcome.result)
        test.assertIn(text, str(outcome.result))
        return str(outcome.result)

    return check


def discarded(name):
    """The worker did not know the task: it logged and discarded the job."""

    def check(test, outcome):
        # Celery quotes the name, so CR/LF arrive in the log escaped.
        message = job_fails(NotRegistered, repr(name))(test, outcome)
        test.assertIn(f"Received unregistered task of type {name!r}", test.new_celery_log())
        return message

    return check


def job_answers(code):
    """The job got HTTP ``code`` from Plone and did not follow it further."""

    def check(test, outcome):
        test.assertIsInstance(outcome, AsyncResult, outcome)
        test.assertEqual(outcome.get(timeout=test.job_timeout), code)
        return f"job answered {code}"

    return check


class HostileTestCase(PipelineTestCase):
    """Users, authenticators, tickets, the listener, and the attacks."""

    def setUp(self):
        super().setUp()
        self.listener = LoopbackListener()
        self.addCleanup(self.listener.stop)
        self.log_records = LogRecords()
        logging.getLogger().addHandler(self.log_records)
        self.addCleanup(logging.getLogger().removeHandler, self.log_records)
        with open(self.layer["celery_log"], "rb") as log:
            self.celery_log_start = len(log.read())
        self.mallory = self.add_user("mallory", local_roles=["Editor"])
        self.check_url = f"{self.portal_url}/@@async-checktask"
        self.record_url = f"{self.doc_url}/@@test-record-job"
        self.owner_token = authenticator_in(self.get(self.check_url, auth=self.owner).text)
        self.mallory_token = authenticator_in(self.get(self.record_url, auth=self.mallory).text)
        self.assertTrue(self.owner_token and self.mallory_token)
        self.mallory_ticket = self.log_in(*self.mallory)
        self.expired_ticket = self.ticket("mallory", age=self.session_timeout() + 3600)
        self.portal_netloc = urlsplit(self.portal_url).netloc
        self.portal_host = urlsplit(self.portal_url).hostname
        self.alias_host = "127.0.0.1" if self.portal_host == "localhost" else "localhost"
        self.marked_state = None
        self.allowlist_log = None
        # Zope's virtual hosting, as a real instance has it (the layer's app lacks it)
        app = self.layer["app"]
        if "virtual_hosting" not in app.objectIds():
            manage_addVirtualHostMonster(app)
            transaction.commit()

    # --- the harness ------------------------------------------------------

    def log_in(self, username, password):
        """Log in through Plone's login form; return the ``__ac`` ticket."""
        session = requests.Session()
        session.post(
            f"{self.portal_url}/login",
            data={"__ac_name": username, "__ac_password": password, "buttons.login": "Log in"},
            timeout=60,
            allow_redirects=False,
        )
        ticket = session.cookies.get("__ac")
        self.assertTrue(ticket, f"{username} could not log in")
        transaction.abort()
        return ticket.strip('"')

    def session_timeout(self):
        return self.portal.acl_users.session.getProperty("timeout")

    def ticket(self, userid, age=0, secret=None):
        """An ``__ac`` ticket for ``userid`` as plone.session signs it,
        issued ``age`` seconds ago (with ``secret``, if given)."""
        plugin = self.portal.acl_users.session
        ticket = tktauth.createTicket(
            secret or plugin._getSigningSecret(userid),
            userid,
            timestamp=int(time.time()) - age,
            mod_auth_tkt=plugin.getProperty("mod_auth_tkt"),
        )
        transaction.abort()
        return binascii.b2a_base64(ticket).rstrip().decode()

    def state(self):
        """The database's last transaction, and what the worker views write."""
        transaction.abort()
        return (
            self.portal._p_jar.db().lastTransaction(),
            notes(self.doc),
            IAnnotations(self.portal).get(CHECKSUM_KEY),
        )

    def mark(self):
        """Remember the database's state: a case must not change it."""
        self.marked_state = self.state()

    def assert_nothing_written(self):
        self.assertEqual(self.state(), self.marked_state)

    def new_celery_log(self):
        with open(self.layer["celery_log"], "rb") as log:
            return log.read()[self.celery_log_start :].decode(errors="replace")

    def start_allowlist_worker(self):
        """A second worker that may send jobs only to the portal's origin."""
        directory = tempfile.mkdtemp(prefix="asynctasks-hostile-")
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        name = f"asynctasks-allowlist-{os.getpid()}"
        worker = start_celery_worker(
            self.layer["redis_url"],
            directory,
            name,
            concurrency=1,
            queues=[ALLOWLIST_QUEUE],
            ASYNC_ALLOWED_ORIGINS=origin(self.portal_url),
            ASYNC_MAX_RETRIES=2,
            ASYNC_RETRY_BACKOFF_MAX=1,
            ASYNC_CONNECT_TIMEOUT=2,
        )
        self.allowlist_log = os.path.join(directory, f"{name}.log")
        return worker

    # --- the attacks: each returns a response, an exception or a job ------

    def http(self, method, url, auth=None, **kwargs):
        return requests.request(method, url, auth=auth, timeout=60, allow_redirects=False, **kwargs)

    def enqueue(
        self,
        url="@@test-record-job",
        data=None,
        headers=None,
        cookies=None,
        context=None,
        job=tasks.Post,
        user=None,
        **options,
    ):
        """Enqueue a job in Plone, as mallory unless ``user`` is given."""
        username, password = user or self.mallory
        request = self.layer["request"]
        saved_auth = getattr(request, "_auth", None)
        request._auth = basic(username, password)
        login(self.portal, username)
        try:
            result = job(context or self.doc, request)(
                url=url, data=dict({"note": "hostile"}, **(data or {})), headers=headers, cookies=cookies, **options
            )
            transaction.commit()
            return result
        except Exception as error:
            transaction.abort()
            return error
        finally:
            logout()
            request._auth = saved_auth

    def to_broker(self, url=None, data=None, headers=None, cookies=None, task=None, queue=None):
        """Send a job straight to the broker, as an attacker with broker
        access would: by default a valid job of mallory's, to a view that
        writes, with whatever the row changes."""
        args = (
            self.record_url if url is None else url,
            dict({TOKEN: self.mallory_token, "note": "from the broker"}, **(data or {})),
            {"Authorization": basic(*self.mallory)} if headers is None else headers,
            cookies or {},
        )
        if task is not None:
            return celerytasks.app.send_task(task, args=args)
        return celerytasks.post.apply_async(args, queue=queue)

    def to_allowlist_worker(self, url):
        return self.to_broker(url=url, queue=ALLOWLIST_QUEUE)

    def lose_permission_after_enqueueing(self):
        editor = self.add_user("editor", local_roles=["Editor"])
        result = self.enqueue(user=editor, countdown=4)
        self.assertIsInstance(result, AsyncResult, result)
        api.user.revoke_roles(username="editor", obj=self.doc, roles=["Editor"])
        transaction.commit()
        self.mark()
        return result

    def be_redirected_off_site(self):
        with api.env.adopt_roles(["Manager"]):
            link = api.content.create(
                container=self.portal,
                type="Link",
                id="away",
                title="Away",
                remoteUrl=f"{self.listener.url}/stolen",
            )
            api.user.grant_roles(username="mallory", obj=link, roles=["Reader"])
        transaction.commit()
        self.mark()
        return self.enqueue(url=None, context=link)

    # --- the table --------------------------------------------------------

    def cases(self):
        """Rows: what the attacker does, the attack with its positional and
        keyword arguments, and the refusal expected."""
        http, enqueue, broker = self.http, self.enqueue, self.to_broker
        allowlist = self.to_allowlist_worker
        owner, mallory = self.owner, self.mallory
        check, record = self.check_url, self.record_url
        listener, portal_netloc = self.listener.url, self.portal_netloc
        portal = self.portal_url
        on_portal = f"http://{portal_netloc}/plone/doc/@@test-record-job"
        login_needed = status(302, 401)
        mallorys_job = {TOKEN: self.mallory_token, "note": "x"}
        # Finding 1: the request names the host that would get the job.
        listener_netloc = f"127.0.0.1:{self.listener.port}"
        enqueue_view = f"{self.doc_url}/@@test-enqueue"
        vhm = f"{self.portal_url.rsplit('/', 1)[0]}/VirtualHostBase/http/{listener_netloc}/plone/VirtualHostRoot"
        return [
            # a link or a request names another host (finding 1): refused at enqueue
            (
                "a Host header naming another port of this machine",
                http,
                ("GET", enqueue_view, mallory),
                dict(params={"job": "post", "note": "x"}, headers={"Host": listener_netloc}),
                status(500),
            ),
            (
                "a Host header naming another host",
                http,
                ("GET", enqueue_view, mallory),
                dict(params={"job": "post", "note": "x"}, headers={"Host": "evil.invalid"}),
                status(500),
            ),
            (
                "a virtual host path naming another host",
                http,
                ("GET", f"{vhm}/doc/@@test-enqueue", mallory),
                dict(params={"job": "post", "note": "x"}),
                status(500),
            ),
            (
                "a Manager follows a link to @@async-status through another host",
                http,
                ("GET", f"{vhm}/@@async-status", owner),
                dict(params={"format": "json"}),
                status(200, text='"round_trips": false'),
            ),
            (
                "a Manager's POST to @@async-status through another host",
                http,
                ("POST", f"{vhm}/@@async-status", owner),
                dict(data={TOKEN: self.owner_token, "format": "json"}),
                status(503, text="no job was sent: jobs may not be sent to http://127.0.0.1"),
            ),
            (
                "a Manager follows a link to @@async-status",
                http,
                ("GET", f"{portal}/@@async-status", owner),
                {},
                status(200, text="NOT RUN"),
            ),
            # worker views, called over HTTP
            (
                "POST without authenticator",
                http,
                ("POST", check, owner),
                dict(data={"checksum": "x"}),
                status(200, text="Run this async job?"),
            ),
            ("forged authenticator", http, ("POST", check, owner), dict(data={TOKEN: FORGED}), status(403)),
            (
                "another user's authenticator with the owner's login",
                http,
                ("POST", check, owner),
                dict(data={TOKEN: self.mallory_token, "checksum": "x"}),
                status(403),
            ),
            (
                "the owner's authenticator with mallory's login",
                http,
                ("POST", record, mallory),
                dict(data={TOKEN: self.owner_token, "note": "x"}),
                status(403),
            ),
            (
                "forged X-CSRF-TOKEN header",
                http,
                ("POST", record, mallory),
                dict(data={"note": "x"}, headers={"X-CSRF-TOKEN": FORGED}),
                status(403),
            ),
            (
                "two authenticators, the forged one first",
                http,
                ("POST", record, mallory),
                dict(data=[(TOKEN, FORGED), (TOKEN, self.mallory_token), ("note", "x")]),
                status(403),
            ),
            (
                "GET with a valid authenticator",
                http,
                ("GET", record, mallory),
                dict(params=mallorys_job),
                status(200, text="Run this async job?"),
            ),
            ("anonymous, with mallory's authenticator", http, ("POST", record), dict(data=mallorys_job), login_needed),
            (
                "expired __ac ticket",
                http,
                ("POST", record),
                dict(data=mallorys_job, cookies={"__ac": self.expired_ticket}),
                login_needed,
            ),
            (
                "garbage __ac cookie",
                http,
                ("POST", record),
                dict(data=mallorys_job, cookies={"__ac": "garbage"}),
                login_needed,
            ),
            (
                "__ac ticket signed with another secret",
                http,
                ("POST", record),
                dict(data=mallorys_job, cookies={"__ac": self.ticket("mallory", secret="guessed")}),
                login_needed,
            ),
            ("wrong password", http, ("POST", record, ("mallory", "wrong")), dict(data=mallorys_job), status(302, 401)),
            (
                "a member without the permission, with her own authenticator",
                http,
                ("POST", check, mallory),
                dict(data={TOKEN: self.mallory_token, "checksum": "x"}),
                status(302, 401, 403),
            ),
            # enqueueing in Plone: refused before anything is queued
            ("file:// url", enqueue, (), dict(url="file:///etc/passwd"), raises(AsyncTaskError, "not an http(s) url")),
            (
                "cloud metadata url",
                enqueue,
                (),
                dict(url="http://169.254.169.254/latest/meta-data/"),
                raises(AsyncTaskError, "not on the portal's origin"),
            ),
            (
                "user name in the url",
                enqueue,
                (),
                dict(url=f"http://evil@{portal_netloc}/plone/doc/@@test-record-job"),
                raises(AsyncTaskError, "user name or password"),
            ),
            (
                "javascript: url",
                enqueue,
                (),
                dict(url="javascript:alert(1)"),
                raises(AsyncTaskError, "not an http(s) url"),
            ),
            (
                "scheme-relative url to another host",
                enqueue,
                (),
                dict(url=f"//127.0.0.1:{self.listener.port}/x"),
                raises(AsyncTaskError, "not an http(s) url"),
            ),
            (
                "the listener's url",
                enqueue,
                (),
                dict(url=f"{listener}/"),
                raises(AsyncTaskError, "not on the portal's origin"),
            ),
            (
                "https instead of http",
                enqueue,
                (),
                dict(url=on_portal.replace("http:", "https:")),
                raises(AsyncTaskError, "not on the portal's origin"),
            ),
            (
                "the portal's host on another port",
                enqueue,
                (),
                dict(url=f"http://{self.portal_host}:{self.listener.port}/plone/doc/@@test-record-job"),
                raises(AsyncTaskError, "not on the portal's origin"),
            ),
            (
                "backslash before @ (parser differential)",
                enqueue,
                (),
                dict(url=f"http://{portal_netloc}\\@127.0.0.1:{self.listener.port}/"),
                raises(AsyncTaskError, "user name or password"),
            ),
            (
                "CR/LF in the url",
                enqueue,
                (),
                dict(url=f"{on_portal}\r\nHost: evil.example"),
                raises(AsyncTaskError, "control characters"),
            ),
            (
                "malformed host in the url",
                enqueue,
                (),
                dict(url="http://[evil/@@x"),
                raises(AsyncTaskError, "not a valid url"),
            ),
            (
                "oversized data",
                enqueue,
                (),
                dict(data={"blob": "x" * 1_000_001}),
                raises(AsyncTaskError, "ASYNC_MAX_JOB_BYTES"),
            ),
            (
                "data that is not JSON",
                enqueue,
                (),
                dict(data={"when": datetime.datetime.now()}),
                raises(AsyncTaskError, "data['when'] is a datetime"),
            ),
            (
                "data that contains itself",
                enqueue,
                (),
                dict(data=self.circular()),
                raises(AsyncTaskError, "contains itself"),
            ),
            (
                "data nested 100000 deep",
                enqueue,
                (),
                dict(data={"deep": self.nested(100_000)}),
                raises(AsyncTaskError, "nested too deeply"),
            ),
            (
                "CR/LF in a header value",
                enqueue,
                (),
                dict(headers={"X-Note": "a\r\nX-celery-task-name: evil"}),
                raises(AsyncTaskError, "header X-Note"),
            ),
            (
                "CR/LF in a header name",
                enqueue,
                (),
                dict(headers={"X-Note\r\nX-Injected": "1"}),
                raises(AsyncTaskError, "header name"),
            ),
            (
                "CR/LF in a cookie value",
                enqueue,
                (),
                dict(cookies={"lang": "nl\r\nX-Injected: 1"}),
                raises(AsyncTaskError, "cookie lang"),
            ),
            (
                "a cookie value that smuggles another cookie",
                enqueue,
                (),
                dict(cookies={"lang": f"nl; __ac={self.mallory_ticket}"}),
                raises(AsyncTaskError, "cookie lang"),
            ),
            (
                "a header value outside Latin-1",
                enqueue,
                (),
                dict(headers={"X-Note": "\u0141\u00f3d\u017a"}),
                raises(AsyncTaskError, "header X-Note"),
            ),
            (
                "a task name with CR/LF",
                enqueue,
                (),
                dict(job=CrlfNamedPost),
                raises(AsyncTaskError, "header X-celery-task-name"),
            ),
            (
                "a delay Redis would deliver twice",
                enqueue,
                (),
                dict(countdown=10**6),
                raises(AsyncTaskError, "delivered twice"),
            ),
            # enqueued in Plone, refused when the job arrives
            (
                "a forged authenticator in the job's data",
                enqueue,
                (),
                dict(data={TOKEN: FORGED}),
                job_fails(AuthorizationError, "403"),
            ),
            (
                "the user lost the permission after enqueueing",
                self.lose_permission_after_enqueueing,
                (),
                {},
                job_fails(AuthorizationError, "as editor"),
            ),
            ("Plone redirects the job off-site", self.be_redirected_off_site, (), {}, job_answers(302)),
            # straight to the broker, bypassing Plone: the layer's worker
            ("an unknown task name", broker, (), dict(task="no.such.task"), discarded("no.such.task")),
            (
                "a task name with CR/LF",
                broker,
                (),
                dict(task=f"{celerytasks.post.name}\r\nX-Injected: 1"),
                discarded(f"{celerytasks.post.name}\r\nX-Injected: 1"),
            ),
            ("file:// url", broker, (), dict(url="file:///etc/passwd"), job_fails(JobRefused, "not an http(s) url")),
            (
                "a password in the url",
                broker,
                (),
                dict(url=f"http://mallory:{mallory[1]}@{portal_netloc}/plone/doc/x", headers={}),
                job_fails(JobRefused, "user name or password"),
            ),
            (
                "a port that is not a number",
                broker,
                (),
                dict(url="http://127.0.0.1:port/"),
                job_fails(JobRefused, "not a valid url"),
            ),
            (
                "a host off this machine, no ASYNC_ALLOWED_ORIGINS set",
                broker,
                (),
                dict(url="http://evil.invalid/@@x"),
                job_fails(JobRefused, "only this machine"),
            ),
            (
                "CR/LF in a header value",
                broker,
                (),
                dict(headers={"Authorization": basic(*mallory), "X-Note": "a\r\nX-Injected: 1"}),
                job_fails(JobRefused, "header X-Note"),
            ),
            (
                "CR/LF in a header name",
                broker,
                (),
                dict(headers={"Authorization": basic(*mallory), "X-Note\r\nX-Injected": "1"}),
                job_fails(JobRefused, "header name"),
            ),
            (
                "a cookie value that smuggles mallory's login",
                broker,
                (),
                dict(headers={}, cookies={"lang": f"nl; __ac={self.mallory_ticket}"}),
                job_fails(JobRefused, "cookie lang"),
            ),
            ("no credentials at all", broker, (), dict(headers={}), job_fails(AuthorizationError, "Plone did not")),
            (
                "a user header claiming the owner, without credentials",
                broker,
                (),
                dict(url=check, headers={"X-Async-User": "admin"}, data={TOKEN: self.owner_token}),
                job_fails(AuthorizationError, "Plone did not"),
            ),
            (
                "expired __ac ticket",
                broker,
                (),
                dict(headers={}, cookies={"__ac": self.expired_ticket}),
                job_fails(AuthorizationError, "Plone did not"),
            ),
            (
                "another user's authenticator",
                broker,
                (),
                dict(data={TOKEN: self.owner_token}),
                job_fails(AuthorizationError, "403"),
            ),
            # straight to the broker: a worker with ASYNC_ALLOWED_ORIGINS
            ("the listener's url", allowlist, (f"{listener}/",), {}, job_fails(JobRefused, "ASYNC_ALLOWED_ORIGINS")),
            (
                "cloud metadata url",
                allowlist,
                ("http://169.254.169.254/latest/meta-data/",),
                {},
                job_fails(JobRefused, "ASYNC_ALLOWED_ORIGINS"),
            ),
            (
                "https instead of http",
                allowlist,
                (on_portal.replace("http:", "https:"),),
                {},
                job_fails(JobRefused, "ASYNC_ALLOWED_ORIGINS"),
            ),
            (
                "the portal's host on another port",
                allowlist,
                (f"http://{self.portal_host}:{self.listener.port}/plone/doc/@@test-record-job",),
                {},
                job_fails(JobRefused, "ASYNC_ALLOWED_ORIGINS"),
            ),
            (
                "the portal under another host name",
                allowlist,
                (on_portal.replace(self.portal_host, self.alias_host, 1),),
                {},
                job_fails(JobRefused, "ASYNC_ALLOWED_ORIGINS"),
            ),
        ]

    def circular(self):
        data = {"note": "loop"}
        data["self"] = data
        return data

    def nested(self, depth):
        value = []
        for _ in range(depth):
            value = [value]
        return value

    def credential_values(self):
        """What must never appear in a log or an error message."""
        owner_basic = basic(*self.owner).split()[1]
        mallory_basic = basic(*self.mallory).split()[1]
        return {
            "mallory's password": self.mallory[1],
            "editor's password": "secret-editor",
            "the owner's HTTP Basic credentials": owner_basic,
            "mallory's HTTP Basic credentials": mallory_basic,
            "mallory's login ticket": self.mallory_ticket,
            "the expired ticket": self.expired_ticket,
        }


class TestHostileInput(HostileTestCase):
    def test_hostile_input_is_refused_writes_nothing_and_goes_nowhere(self):
        worker = self.start_allowlist_worker()
        try:
            # The second worker does run a job for the portal's own origin.
            job = self.to_allowlist_worker(self.record_url)
            self.assertEqual(job.get(timeout=self.job_timeout), 200)
            self.assertEqual(notes(self.fresh(self.doc)), ["from the broker"])
            del IAnnotations(self.doc)[NOTES_KEY]
            transaction.commit()

            messages = []
            cases = self.cases()
            self.assertGreaterEqual(len(cases), 30)
            for what, attack, args, kwargs, expected in cases:
                with self.subTest(f"{attack.__name__}: {what}"):
                    self.mark()
                    connections = len(self.listener.connections)
                    outcome = attack(*args, **kwargs)
                    messages.append(expected(self, outcome))
                    self.assert_nothing_written()
                    self.assertEqual(self.listener.connections[connections:], [])
        finally:
            stop_process(worker)
        time.sleep(0.5)  # a late connection would still be counted
        self.assertEqual(self.listener.connections, [])

        with open(self.allowlist_log, errors="replace") as log:
            logs = {
                "the layer's worker log": self.new_celery_log(),
                "the allowlist worker log": log.read(),
                "this process's log": "\n".join(self.log_records.lines),
                "the errors of the table": "\n".join(messages),
            }
        for where, text in logs.items():
            for what, value in self.credential_values().items():
                with self.subTest(f"{what} not in {where}"):
                    self.assertNotIn(value, text)


class TestTheHarnessNotices(HostileTestCase):
    """The table would see a write and a connection, and its tickets work."""

    def test_a_valid_job_writes_and_the_layer_worker_reaches_the_listener(self):
        self.mark()
        job = self.enqueue(data={"note": "valid"})
        self.assertEqual(job.get(timeout=self.job_timeout), 200)
        with self.assertRaises(AssertionError):
            self.assert_nothing_written()
        self.assertEqual(notes(self.fresh(self.doc)), ["valid"])

        # Without ASYNC_ALLOWED_ORIGINS the worker sends wherever a job says.
        job = self.to_broker(url=f"{self.listener.url}/")
        try:
            self.wait_for(lambda: self.listener.connections, "a connection to the listener")
        finally:
            job.revoke()  # the listener answers nothing, so the job would retry
        _, received = self.listener.connections[0]
        self.assertTrue(received.startswith(b"POST / HTTP/1.1"), received)

    def test_a_fresh_ticket_of_the_same_making_logs_in(self):
        form = self.http("GET", self.record_url, cookies={"__ac": self.ticket("mallory")})
        self.assertEqual(form.status_code, 200)
        self.assertIn("Run this async job?", form.text)
        self.assertIn("Run this async job?", self.http("GET", self.record_url, auth=self.mallory).text)


class TestJobCredentials(HostileTestCase):
    """Finding 3: what a reader of Redis, Flower or a log finds in a job
    logs in nowhere else and at no later time."""

    def enqueue_with_ticket(self, ticket, **options):
        """Enqueue a job as mallory, logged in with the ``__ac`` ticket only."""
        request = self.layer["request"]
        saved = (getattr(request, "_auth", None), request.cookies.get("__ac"))
        request._auth = None
        request.cookies["__ac"] = ticket
        login(self.portal, "mallory")
        try:
            result = tasks.Post(self.doc, request)(url="@@test-record-job", data={"note": "by mallory"}, **options)
            transaction.commit()
            return result
        finally:
            logout()
            request._auth, request.cookies["__ac"] = saved

    def queued_job(self):
        """Enqueue a job into a queue nobody reads; return its raw message,
        its decoded arguments and its ledger entry."""
        queue = f"nobody-{time.monotonic_ns()}"
        result = self.enqueue(queue=queue)
        self.assertIsInstance(result, AsyncResult, result)
        client = redis.Redis.from_url(self.layer["redis_url"], socket_timeout=5)
        try:
            raws = client.lrange(queue, 0, -1)
            entry = client.hget(ledger.JOBS, result.id) or b""
            client.delete(queue)
        finally:
            client.close()
        ledger.forget(celerytasks.app, result.id)
        self.assertEqual(len(raws), 1)
        message = json.loads(raws[0])
        args, _, _ = json.loads(base64.b64decode(message["body"]))
        return raws[0].decode() + entry.decode(), args

    def test_a_queued_job_holds_no_login(self):
        raw, (url, data, headers, cookies) = self.queued_job()
        self.assertEqual(cookies, {})
        self.assertNotIn("Authorization", headers)
        self.assertIn(TOKEN_HEADER, headers)
        userid, path, expires = jobtoken.read(headers[TOKEN_HEADER])
        self.assertEqual((userid, path), ("mallory", "/plone/doc/@@test-record-job"))
        self.assertLess(expires, time.time() + 6 * 3600 + 60)
        for what, value in self.credential_values().items():
            self.assertNotIn(value, raw, what)

    def test_a_captured_token_is_worthless_anywhere_else(self):
        _, (url, data, headers, _) = self.queued_job()
        token = headers[TOKEN_HEADER]
        secret = getUtility(IKeyManager).secret(jobtoken.RING)
        transaction.abort()
        later = time.time() + 3600
        job = {TOKEN: self.mallory_token, "note": "replayed"}
        whoami = f"{self.portal_url}/@@async-push-user"

        def post(url, token):
            return self.http("POST", url, data=job, headers={TOKEN_HEADER: token})

        self.mark()
        for what, response in [
            ("another url", post(self.check_url, token)),
            ("a GET of who is logged in", self.http("GET", whoami, headers={TOKEN_HEADER: token})),
            ("expired", post(url, jobtoken.sign(secret, "mallory", url, time.time() - 1))),
            ("signed with another secret", post(url, jobtoken.sign("guessed", "mallory", url, later))),
            ("for a user that does not exist", post(url, jobtoken.sign(secret, "nobody", url, later))),
            ("its path changed", post(url, token.replace(".", "x.", 1))),
        ]:
            with self.subTest(what):
                self.assertIn(response.status_code, (302, 401, 403), response.text[:300])
                self.assertNotEqual(response.text, "mallory")
        self.assert_nothing_written()
        # what it is good for: the same job, as the same user, until it expires
        self.assertEqual(post(url, token).text, "recorded")
        self.assertEqual(notes(self.fresh(self.doc)), ["replayed"])

    def test_a_job_outlives_its_users_logout(self):
        """With plone.session's server-side logout, a job queued before the
        user logged out still runs as them: it never held their ticket."""
        session = self.portal.acl_users.session
        session._updateProperty("per_user_keyring", True)
        transaction.commit()
        self.addCleanup(transaction.commit)
        self.addCleanup(session._updateProperty, "per_user_keyring", False)
        ticket = self.log_in(*self.mallory)
        whoami = f"{self.portal_url}/@@async-push-user"
        self.assertEqual(self.http("GET", whoami, cookies={"__ac": ticket}).text, "mallory")
        result = self.enqueue_with_ticket(ticket, countdown=3)
        # with her authenticator, or plone.protect undoes the logout's write
        self.http("GET", f"{self.portal_url}/logout", cookies={"__ac": ticket}, params={TOKEN: self.mallory_token})
        self.assertEqual(self.http("GET", whoami, cookies={"__ac": ticket}).status_code, 403)
        self.assertEqual(result.get(timeout=self.job_timeout), 200)
        self.assertEqual(notes(self.fresh(self.doc)), ["by mallory"])


class TestMaskedUrls(HostileTestCase):
    """Finding 4: no password of a broker url is shown or logged."""

    def test_every_password_of_a_url_is_masked(self):
        for url, secrets in [
            ("redis://:pw-one@h1:6379/0;redis://:pw-two@h2:6379/0", ["pw-one", "pw-two"]),
            ("sentinel://u:pw-one@h1:26379;sentinel://u:pw-two@h2:26379", ["pw-one", "pw-two"]),
            ("redis://h/0?password=pw-one", ["pw-one"]),
            ("redis://h/0?db=1&sentinel_password=pw-one&x=1", ["pw-one"]),
            ("amqp://guest:pw-one@localhost:5672//", ["pw-one"]),
        ]:
            with self.subTest(url):
                masked = masked_url(url)
                self.assertIn("***", masked)
                for secret in secrets:
                    self.assertNotIn(secret, masked)
        self.assertEqual(masked_url("redis://h1:6379/0;redis://h2/1"), "redis://h1:6379/0;redis://h2/1")

    def test_make_run_masks_the_broker_password(self):
        preflight = _load_script("preflight")
        self.enterContext(mock.patch.dict(os.environ, BROKER_URL=f"redis://:pw-one@127.0.0.1:{free_port()}/0"))
        with self.assertRaises(preflight.DevServerError) as raised:
            preflight.choose_broker()
        self.assertIn("redis://:***@127.0.0.1", str(raised.exception))
        self.assertNotIn("pw-one", str(raised.exception))

    def test_the_status_view_masks_a_failover_list(self):
        closed = free_port()
        saved = celerytasks.app.conf.broker_url
        celerytasks.app.conf.broker_url = (
            f"redis://:pw-one@127.0.0.1:{closed}/0;redis://:pw-two@127.0.0.1:{closed}/1?password=pw-three"
        )
        try:
            response = self.http("GET", f"{self.portal_url}/@@async-status", auth=self.owner, params={"format": "json"})
        finally:
            celerytasks.app.conf.broker_url = saved
        self.assertEqual(response.status_code, 503)
        self.assertIn(f"127.0.0.1:{closed}", response.text)
        for secret in ("pw-one", "pw-two", "pw-three"):
            self.assertNotIn(secret, response.text)
