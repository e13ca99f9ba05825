"""The push server: only sockets Plone recognises open, and each user
receives only the messages addressed to them."""

import asyncio
import base64
import json
from plone import api
from plone.app.testing import TEST_USER_ID
from plone.app.testing import setRoles
from plone.namedfile.file import NamedBlobImage
from plone.protect.authenticator import createToken
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks import previews
from ploneintranet.asynctasks.core import USER_HEADER
from ploneintranet.asynctasks.push import messages
from ploneintranet.asynctasks.testing import ASYNC_PUSH_TESTING
from ploneintranet.asynctasks.testing import REDIS_SERVER_FIXTURE
from ploneintranet.asynctasks.testing import wait_until
import redis
import requests
from tornado import httpclient
from tornado import websocket
import transaction
import unittest


#: A 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg=="
)


def login_cookie(portal_url, username, password):
    """Log in through Plone's login form; return the ``__ac`` cookie value."""
    response = requests.post(
        f"{portal_url}/login",
        data={"__ac_name": username, "__ac_password": password, "buttons.login": "Log in"},
        allow_redirects=False,
        timeout=60,
    )
    cookie = response.cookies.get("__ac")
    assert cookie, f"login of {username} failed: {response.status_code}"
    return cookie


class Socket:
    """A test client of the push server, run on the test's asyncio loop."""

    def __init__(self, loop, url, cookie=None, origin=None):
        headers = {}
        if cookie:
            headers["Cookie"] = f"__ac={cookie}"
        if origin:
            headers["Origin"] = origin
        request = httpclient.HTTPRequest(url, headers=headers, request_timeout=30)
        self.loop = loop
        self.connection = self.run(lambda: websocket.websocket_connect(request))

    def run(self, make_awaitable):
        """Await what ``make_awaitable()`` returns, made on the running loop."""

        async def wrapped():
            return await make_awaitable()

        return self.loop.run_until_complete(wrapped())

    def receive(self, timeout=15):
        """The next message as a dict, or ``None`` after ``timeout`` seconds."""
        try:
            text = self.run(
                lambda: asyncio.wait_for(self.connection.read_message(), timeout)
            )
        except asyncio.TimeoutError:
            return None
        return None if text is None else json.loads(text)

    def close(self):
        async def closing():
            self.connection.close()
            await asyncio.sleep(0.1)

        self.run(closing)


class PushTestCase(unittest.TestCase):
    layer = ASYNC_PUSH_TESTING

    def setUp(self):
        self.portal = self.layer["portal"]
        self.portal_url = self.portal.absolute_url()
        self.origin = self.portal_url.rsplit("/", 1)[0]
        setRoles(self.portal, TEST_USER_ID, ["Manager"])
        for username in ("alice", "bob"):
            api.user.create(
                email=f"{username}@example.com", username=username,
                password=f"secret-{username}", roles=["Member"],
            )
        transaction.commit()
        self.sockets = []
        self.loop = asyncio.new_event_loop()

    def tearDown(self):
        for socket in self.sockets:
            socket.close()
        self.loop.close()

    def cookie(self, username):
        return login_cookie(self.portal_url, username, f"secret-{username}")

    def open(self, cookie=None, origin=None):
        socket = Socket(self.loop, self.layer["push_url"], cookie, origin or self.origin)
        self.sockets.append(socket)
        return socket

    def assertRefused(self, cookie=None, origin=None):
        with self.assertRaises(httpclient.HTTPClientError) as refused:
            self.open(cookie, origin)
        self.assertEqual(refused.exception.code, 403)


class TestAuthentication(PushTestCase):
    def test_socket_without_login_cookie_is_refused(self):
        self.assertRefused()

    def test_socket_with_forged_login_cookie_is_refused(self):
        self.assertRefused(cookie=base64.b64encode(b"forged alice ticket").decode())

    def test_socket_from_a_page_of_another_site_is_refused(self):
        self.assertRefused(cookie=self.cookie("alice"), origin="http://evil.example")

    def test_plone_says_who_the_cookie_belongs_to_and_403_for_anonymous(self):
        url = f"{self.portal_url}/@@async-push-user"
        self.assertEqual(requests.get(url, timeout=30).status_code, 403)
        answer = requests.get(url, cookies={"__ac": self.cookie("bob")}, timeout=30)
        self.assertEqual((answer.status_code, answer.text), (200, "bob"))

    def test_cookie_values_are_not_logged(self):
        cookie = self.cookie("alice")
        self.open(cookie)
        self.assertRefused(cookie="not-a-real-cookie-value")
        with open(self.layer["push_log"]) as log:
            text = log.read()
        self.assertIn("socket opened for alice", text)
        self.assertNotIn(cookie, text)
        self.assertNotIn("not-a-real-cookie-value", text)


class TestDelivery(PushTestCase):
    def test_each_user_receives_only_their_own_messages(self):
        alice = self.open(self.cookie("alice"))
        bob = self.open(self.cookie("bob"))
        self.assertEqual(messages.publish("alice", "t", "done", "/a", "for-alice"), 1)
        self.assertEqual(alice.receive()["target"], "for-alice")
        self.assertEqual(messages.publish("bob", "t", "done", "/b", "for-bob"), 1)
        self.assertEqual(bob.receive()["target"], "for-bob")  # not alice's message
        self.assertIsNone(alice.receive(timeout=1))

    def test_every_socket_of_a_user_receives_the_message(self):
        cookie = self.cookie("alice")
        tabs = [self.open(cookie), self.open(cookie)]
        messages.publish("alice", "t", "done", "/a", "both")
        self.assertEqual([tab.receive()["target"] for tab in tabs], ["both", "both"])

    def test_a_closed_socket_unsubscribes(self):
        alice = self.open(self.cookie("alice"))
        alice.close()
        self.sockets.remove(alice)
        # the server unsubscribes: nobody receives alice's messages any more
        wait_until(lambda: messages.publish("alice", "t", "done") == 0, 10,
                   message="the push server to unsubscribe alice's channel")


class TestPreviewJobPushes(PushTestCase):
    """``generate_preview`` pushes ``done`` or ``failed`` to the job's user."""

    def setUp(self):
        super().setUp()
        self.image = api.content.create(
            container=self.portal, type="Image", id="photo", title="Photo",
            image=NamedBlobImage(PNG, filename="photo.png"),
        )
        api.user.grant_roles(username="alice", obj=self.image, roles=["Editor"])
        transaction.commit()
        self.cookie_alice = self.cookie("alice")
        with api.env.adopt_user(username="alice"):
            self.token = createToken()

    def send(self, view):
        data = dict(_authenticator=self.token, **previews.push_fields(self.image))
        headers = {USER_HEADER: "alice"}
        args = (f"{self.image.absolute_url()}/{view}", data, headers, {"__ac": self.cookie_alice})
        return celerytasks.generate_preview.apply_async(args)

    def test_done_names_the_snippet_that_replaces_the_placeholder(self):
        alice = self.open(self.cookie_alice)
        bob = self.open(self.cookie("bob"))
        self.send("@@async-generate-preview")
        message = alice.receive(timeout=30)
        self.assertEqual(message["status"], "done")
        self.assertEqual(message["task"], celerytasks.generate_preview.name)
        self.assertEqual(message["target"], previews.target_id(self.image))
        snippet = requests.get(
            message["snippet_url"], cookies={"__ac": self.cookie_alice}, timeout=30
        )
        self.assertIn(f'id="{message["target"]}"', snippet.text)
        self.assertIn("<img", snippet.text)
        self.assertNotIn("data-pat-push", snippet.text)
        self.assertIsNone(bob.receive(timeout=1))

    def test_a_job_that_finally_fails_pushes_failed(self):
        alice = self.open(self.cookie_alice)
        self.send("@@no-such-view")  # 404: refused, not retried
        message = alice.receive(timeout=30)
        self.assertEqual(message["status"], "failed")
        self.assertEqual(message["target"], previews.target_id(self.image))


class TestRedisRestart(PushTestCase):
    def test_open_sockets_receive_again_after_redis_restarts(self):
        alice = self.open(self.cookie("alice"))
        REDIS_SERVER_FIXTURE.stop_server()
        REDIS_SERVER_FIXTURE.start_server()

        def delivered():
            try:
                messages.publish("alice", "t", "done", "/a", "after-restart")
            except redis.RedisError:
                return False
            message = alice.receive(timeout=0.5)
            return message is not None and message["target"] == "after-restart"

        # the push server reconnects and subscribes again by itself
        wait_until(delivered, 30, message="a message to alice after Redis restarted")
