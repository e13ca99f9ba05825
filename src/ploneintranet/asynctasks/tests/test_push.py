"""The push server: only sockets Plone recognises open, each user receives
only the messages addressed to them, and no client holds more than its limits."""

import asyncio
import base64
import json
import os
from plone import api
from plone.app.testing import TEST_USER_ID
from plone.app.testing import FunctionalTesting
from plone.app.testing import setRoles
from plone.namedfile.file import NamedBlobImage
from plone.protect.authenticator import createToken
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks import previews
from ploneintranet.asynctasks.push import messages
from ploneintranet.asynctasks.testing import ASYNC_FIXTURE
from ploneintranet.asynctasks.testing import ASYNC_PUSH_TESTING
from ploneintranet.asynctasks.testing import CELERY_WORKER_FIXTURE
from ploneintranet.asynctasks.testing import REDIS_SERVER_FIXTURE
from ploneintranet.asynctasks.testing import PushServerLayer
from ploneintranet.asynctasks.testing import wait_until
from ploneintranet.asynctasks.wire import USER_HEADER
import redis
import requests
import time
from tornado import httpclient
from tornado import websocket
import transaction
import unittest
from urllib.parse import urlsplit


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
            text = self.run(lambda: asyncio.wait_for(self.connection.read_message(), timeout))
        except asyncio.TimeoutError:
            return None
        return None if text is None else json.loads(text)

    def send(self, text):
        """Send ``text`` as one frame."""
        self.run(lambda: self.connection.write_message(text))

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
                email=f"{username}@example.com",
                username=username,
                password=f"secret-{username}",
                roles=["Member"],
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

    def assertRefused(self, cookie=None, origin=None, code=403):
        with self.assertRaises(httpclient.HTTPClientError) as refused:
            self.open(cookie, origin)
        self.assertEqual(refused.exception.code, code)


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
        wait_until(
            lambda: messages.publish("alice", "t", "done") == 0,
            10,
            message="the push server to unsubscribe alice's channel",
        )


class TestLogout(PushTestCase):
    """Logging out of Plone closes the user's sockets (``push.subscribers``)."""

    def test_logging_out_closes_the_users_sockets_within_seconds(self):
        cookie = self.cookie("alice")
        tabs = [self.open(cookie), self.open(cookie)]
        bob = self.open(self.cookie("bob"))
        closed_before = self.closed_in_log()
        started = time.monotonic()
        logout = requests.get(f"{self.portal_url}/logout", cookies={"__ac": cookie}, allow_redirects=False, timeout=30)
        self.assertEqual(logout.status_code, 302)
        for tab in tabs:
            self.assertIsNone(tab.receive(timeout=5))
            self.assertEqual((tab.connection.close_code, tab.connection.close_reason), (4001, "logged out"))
        self.assertLess(time.monotonic() - started, 5)
        wait_until(
            lambda: messages.publish("alice", "t", "done") == 0,
            10,
            message="the push server to unsubscribe alice's channel",
        )
        messages.publish("bob", "t", "done", "/b", "still-here")  # other users are not affected
        self.assertEqual(bob.receive()["target"], "still-here")
        self.assertEqual(self.closed_in_log() - closed_before, 2)

    def closed_in_log(self):
        """How many of alice's sockets the push server's log says it closed."""
        with open(self.layer["push_log"]) as log:
            return log.read().count("socket of alice closed: logged out of Plone")

    def test_a_logout_message_is_not_relayed_to_the_browser(self):
        alice = self.open(self.cookie("alice"))
        messages.publish_logout("alice")
        self.assertIsNone(alice.receive(timeout=5))
        self.assertEqual(alice.connection.close_code, 4001)


class TestPreviewJobPushes(PushTestCase):
    """``generate_preview`` pushes ``done`` or ``failed`` to the job's user."""

    def setUp(self):
        super().setUp()
        self.image = api.content.create(
            container=self.portal,
            type="Image",
            id="photo",
            title="Photo",
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
        snippet = requests.get(message["snippet_url"], cookies={"__ac": self.cookie_alice}, timeout=30)
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


#: Small limits, so that a test reaches them in a second or two.
LIMITS = dict(
    ASYNC_PUSH_MAX_MESSAGE_BYTES="1024",
    ASYNC_PUSH_MAX_SOCKETS_PER_USER="2",
    ASYNC_PUSH_UPGRADE_TIMEOUT="2",
    ASYNC_PUSH_IDLE_TIMEOUT="2",
)
MAX_BYTES = int(LIMITS["ASYNC_PUSH_MAX_MESSAGE_BYTES"])
MAX_SOCKETS = int(LIMITS["ASYNC_PUSH_MAX_SOCKETS_PER_USER"])
UPGRADE_TIMEOUT = float(LIMITS["ASYNC_PUSH_UPGRADE_TIMEOUT"])
IDLE_TIMEOUT = float(LIMITS["ASYNC_PUSH_IDLE_TIMEOUT"])
#: What a busy test machine may add to a timeout of the push server.
SLACK = 1.5
#: Tornado waits this long for a client to answer its close frame.
CLOSE_HANDSHAKE = 5
PING, CLOSE = 0x9, 0x8


class LimitedPushServerLayer(PushServerLayer):
    """The push server process, started with :data:`LIMITS` in its environment."""

    environ = LIMITS


LIMITED_PUSH_SERVER_FIXTURE = LimitedPushServerLayer(name="ploneintranet.asynctasks.tests:LimitedPushServer")
LIMITED_PUSH_TESTING = FunctionalTesting(
    bases=(CELERY_WORKER_FIXTURE, ASYNC_FIXTURE, LIMITED_PUSH_SERVER_FIXTURE),
    name="ploneintranet.asynctasks.tests:LimitedPush",
)


async def frames_until_closed(reader):
    """``(opcode, payload, monotonic time)`` of each frame the server sends,
    until it closes the TCP connection; nothing is ever answered."""
    frames = []
    while True:
        try:
            head = await reader.readexactly(2)
        except (asyncio.IncompleteReadError, ConnectionError):
            return frames
        length = head[1] & 0x7F
        assert length < 126, f"a frame of {length} bytes: only pings and close were expected"
        payload = await reader.readexactly(length)
        frames.append((head[0] & 0x0F, payload, time.monotonic()))


class TestLimits(PushTestCase):
    """What one client can hold of the push server is bounded."""

    layer = LIMITED_PUSH_TESTING

    def address(self):
        parts = urlsplit(self.layer["push_url"])
        return parts.hostname, parts.port

    def log(self):
        with open(self.layer["push_log"]) as log:
            return log.read()

    def test_a_frame_above_the_limit_closes_the_socket(self):
        alice = self.open(self.cookie("alice"))
        alice.send("x" * MAX_BYTES)  # the limit itself is allowed, and ignored
        messages.publish("alice", "t", "done", "/a", "still-open")
        self.assertEqual(alice.receive()["target"], "still-open")
        alice.send("x" * (MAX_BYTES + 1))
        self.assertIsNone(alice.receive(timeout=10))
        self.assertEqual(alice.connection.close_code, 1009)  # message too big
        wait_until(
            lambda: messages.publish("alice", "t", "done") == 0,
            10,
            message="the push server to free alice's only socket",
        )

    def test_a_user_may_open_only_so_many_sockets(self):
        alice, bob = self.cookie("alice"), self.cookie("bob")
        first = self.open(alice)
        for _ in range(MAX_SOCKETS - 1):
            self.open(alice)
        self.assertRefused(alice, code=429)
        self.open(bob)  # the limit is per user
        first.close()
        self.sockets.remove(first)
        wait_until(lambda: self.opens(alice), 10, message="a socket in place of a closed one")
        log = self.log()
        self.assertIn(f"refused a socket for alice: {MAX_SOCKETS} sockets open already", log)
        self.assertNotIn(alice, log)

    def opens(self, cookie):
        """Open a socket; ``False`` if the server refuses it as one too many."""
        try:
            self.open(cookie)
        except httpclient.HTTPClientError as refused:
            if refused.code != 429:
                raise
            return False
        return True

    def test_requests_that_never_become_sockets_hold_no_place_for_long(self):
        cookie = self.cookie("alice")
        url = self.layer["push_url"].replace("ws://", "http://", 1)
        for _ in range(MAX_SOCKETS):  # authenticated, then no upgrade: 400
            answer = requests.get(url, cookies={"__ac": cookie}, headers={"Origin": self.origin}, timeout=30)
            self.assertEqual(answer.status_code, 400)
        self.assertRefused(cookie, code=429)
        started = time.monotonic()
        wait_until(
            lambda: self.opens(cookie), UPGRADE_TIMEOUT + SLACK, message="the places of the requests to be given back"
        )
        self.assertLess(time.monotonic() - started, UPGRADE_TIMEOUT + SLACK)

    def test_a_client_that_does_not_finish_its_request_is_dropped(self):
        request = b"GET /push HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
        clients = {
            "nothing": (b"", b""),
            "half a request": (request, b""),
            "a byte every 50 ms": (b"", request),
        }

        async def all_at_once():  # the test takes one timeout, not three
            return await asyncio.gather(*(self.seconds_until_dropped(*sent) for sent in clients.values()))

        seconds = self.loop.run_until_complete(all_at_once())
        for name, dropped_after in zip(clients, seconds, strict=True):
            with self.subTest(name):
                self.assertLess(dropped_after, UPGRADE_TIMEOUT + SLACK)

    async def seconds_until_dropped(self, sent_at_once, trickled, give_up=10):
        """Send ``sent_at_once``, then ``trickled`` a byte every 50 ms; return
        the seconds until the server closes the connection (or ``give_up``)."""
        reader, writer = await asyncio.open_connection(*self.address())
        started = time.monotonic()
        writer.write(sent_at_once)
        try:
            while time.monotonic() - started < give_up:
                try:
                    if await asyncio.wait_for(reader.read(4096), 0.05) == b"":
                        break
                except asyncio.TimeoutError:
                    writer.write(trickled[:1])
                    trickled = trickled[1:]
                except ConnectionError:
                    break
            return time.monotonic() - started
        finally:
            writer.close()

    def test_a_request_with_a_body_is_refused_at_once(self):
        async def answer():
            reader, writer = await asyncio.open_connection(*self.address())
            writer.write(b"POST /push HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\nthe first bytes")
            try:
                return await asyncio.wait_for(reader.read(), 10)
            finally:
                writer.close()

        self.assertTrue(self.loop.run_until_complete(answer()).startswith(b"HTTP/1.1 400"))

    def test_a_socket_that_answers_no_ping_is_closed(self):
        cookie = self.cookie("alice")
        answering = self.open(cookie)  # Tornado's client answers pings
        frames = self.loop.run_until_complete(
            asyncio.wait_for(self.silent_socket(cookie), IDLE_TIMEOUT + CLOSE_HANDSHAKE + 2 * SLACK)
        )
        opcodes = [opcode for opcode, _, _ in frames]
        self.assertEqual(opcodes[-1], CLOSE)
        self.assertIn(PING, opcodes)
        self.assertIn(b"ping timed out", frames[-1][1])
        self.assertLess(frames[-1][2] - self.upgraded, IDLE_TIMEOUT + SLACK)
        # the silent socket's place is free, the answering one is still open
        wait_until(lambda: self.opens(cookie), 10, message="the silent socket's place")
        messages.publish("alice", "t", "done", "/a", "alive")
        self.assertEqual(answering.receive()["target"], "alive")

    async def silent_socket(self, cookie):
        """Upgrade a raw connection to a socket of the user of ``cookie``,
        then answer nothing; return the frames the server sent until it
        closed the connection."""
        host, port = self.address()
        reader, writer = await asyncio.open_connection(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /push HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nOrigin: {self.origin}\r\n"
            f"Cookie: __ac={cookie}\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        self.upgraded = time.monotonic()
        assert head.startswith(b"HTTP/1.1 101"), head
        try:
            return await frames_until_closed(reader)
        finally:
            writer.close()
