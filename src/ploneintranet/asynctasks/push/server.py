"""The websocket push server: relays a user's push messages to their browsers.

Each socket is authenticated when it opens: the server forwards the socket's
``__ac`` login cookie, and nothing else, to ``@@async-push-user`` of the one
configured Plone site (``ASYNC_PUSH_PLONE_URL``), which answers the user id or
403. The user's channel is derived from that answer alone; the browser cannot
choose it. Sockets of pages from other origins, and sockets Plone does not
recognise, are refused with 403 before the websocket upgrade. When the user
logs out of Plone, Plone publishes a ``logout`` message on their channel
(:func:`~ploneintranet.asynctasks.push.messages.publish_logout`) and the
server closes their sockets (code 4001).

The limits of :mod:`~ploneintranet.asynctasks.celeryconfig` bound what one
client can hold: a request must arrive within ``ASYNC_PUSH_UPGRADE_TIMEOUT``
seconds, a user may have ``ASYNC_PUSH_MAX_SOCKETS_PER_USER`` sockets (more get
429), a frame above ``ASYNC_PUSH_MAX_MESSAGE_BYTES`` closes its socket (1009),
and a socket that answers no ping for ``ASYNC_PUSH_IDLE_TIMEOUT`` seconds is
closed.
"""

import asyncio
import logging
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks.broker import async_client_for
from ploneintranet.asynctasks.push.messages import channel
from ploneintranet.asynctasks.push.messages import is_logout
from ploneintranet.asynctasks.wire import origin
import re
import redis
from tornado import httpclient
from tornado import web
from tornado import websocket
from tornado.ioloop import IOLoop


logger = logging.getLogger("ploneintranet.asynctasks.push")

#: The Plone view that says who a login cookie belongs to.
AUTH_VIEW = "@@async-push-user"
AUTH_COOKIE = "__ac"
#: Path of the websocket on the push server.
SOCKET_PATH = "/push"
# A cookie value we forward: no quote, semicolon, space or control character.
COOKIE_VALUE = re.compile(r"[!#-+\--:<-\[\]-~]+")
#: The close code and reason of the sockets of a user who logged out.
LOGGED_OUT = (4001, "logged out")


class PloneAuthenticator:
    """Asks the configured Plone site who a login cookie belongs to."""

    def __init__(self, plone_url, timeout=10):
        self.url = f"{plone_url.rstrip('/')}/{AUTH_VIEW}"
        self.timeout = timeout
        self.client = httpclient.AsyncHTTPClient()

    async def __call__(self, cookie):
        """Return the user id of the ``__ac`` value ``cookie``, or ``None``."""
        if not cookie or not COOKIE_VALUE.fullmatch(cookie):
            return None
        request = httpclient.HTTPRequest(
            self.url,
            headers={"Cookie": f"{AUTH_COOKIE}={cookie}"},
            follow_redirects=False,
            connect_timeout=self.timeout,
            request_timeout=self.timeout,
        )
        try:
            response = await self.client.fetch(request, raise_error=False)
        except (OSError, httpclient.HTTPClientError) as error:
            logger.warning("could not ask %s who opened a socket: %s", self.url, error)
            return None
        if response.code != 200:
            return None
        return response.body.decode("utf-8", "replace").strip() or None


class Channels:
    """One Redis pub/sub connection for the process; each open socket is
    registered under its user's channel, subscribed while it has sockets."""

    def __init__(self, redis_url, options=None):
        # a sentinel:// url follows the master named in the transport options
        self.redis = async_client_for(redis_url, celeryconfig.ASYNC_PUSH_REDIS_OPTIONS if options is None else options)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.sockets = {}
        self.lock = asyncio.Lock()
        self.subscribed = asyncio.Event()

    async def add(self, name, socket, limit):
        """Register ``socket`` under channel ``name``; return ``False``, and
        register nothing, if ``name`` has ``limit`` sockets already."""
        async with self.lock:
            if len(self.sockets.get(name, ())) >= limit:
                return False
            if name not in self.sockets:
                await self.pubsub.subscribe(name)
                self.sockets[name] = set()
            self.sockets[name].add(socket)
        self.subscribed.set()
        return True

    async def remove(self, name, socket):
        async with self.lock:
            sockets = self.sockets.get(name)
            if sockets is None:
                return
            sockets.discard(socket)
            if not sockets:
                del self.sockets[name]
                await self.pubsub.unsubscribe(name)

    async def run(self):
        """Deliver each message to the sockets of its channel, until cancelled."""
        await self.subscribed.wait()  # reading needs a subscribed connection
        pause = 0.5
        while True:
            try:
                message = await self.pubsub.get_message(timeout=1.0)
            except (redis.RedisError, OSError) as error:
                # redis-py reconnects and subscribes again on the next read
                logger.warning("Redis pub/sub failed, retrying in %.1f s: %s", pause, error)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 10)
                continue
            pause = 0.5
            if message is None or message.get("type") != "message":
                continue
            name = message["channel"].decode()
            text = message["data"].decode("utf-8", "replace")
            sockets = list(self.sockets.get(name, ()))
            if is_logout(text):
                for socket in sockets:
                    socket.log_out()
                continue
            for socket in sockets:
                socket.deliver(text)

    async def close(self):
        await self.pubsub.aclose()
        await self.redis.aclose()


class PushSocket(websocket.WebSocketHandler):
    """A browser's socket: authenticated and subscribed before the upgrade,
    then receive-only."""

    def initialize(self, channels, authenticate, allowed_origins, max_sockets, upgrade_timeout):
        self.channels = channels
        self.authenticate = authenticate
        self.allowed_origins = allowed_origins
        self.max_sockets = max_sockets
        #: Seconds a subscribed socket may take to finish its upgrade.
        self.upgrade_timeout = upgrade_timeout
        self.userid = None
        self.channel = None
        self.opened = False
        self.logged_out = False
        self.early = []  # messages that came before the upgrade finished

    def check_origin(self, value):
        # a page of another site must not use the visitor's login cookie here
        return origin(value).rstrip("/") in self.allowed_origins

    async def prepare(self):
        page = self.request.headers.get("Origin")
        if page is not None and not self.check_origin(page):
            raise web.HTTPError(403, "socket from another origin")
        self.userid = await self.authenticate(self.get_cookie(AUTH_COOKIE))
        if self.userid is None:
            raise web.HTTPError(403, "not logged in to Plone")
        # Subscribed before the browser sees the socket open: nothing
        # published after that is missed.
        name = channel(self.userid)
        if not await self.channels.add(name, self, self.max_sockets):
            logger.warning(
                "refused a socket for %s: %d sockets open already (ASYNC_PUSH_MAX_SOCKETS_PER_USER)",
                self.userid,
                self.max_sockets,
            )
            raise web.HTTPError(429, "too many sockets")
        self.channel = name
        IOLoop.current().call_later(self.upgrade_timeout, self.forget_if_never_opened)

    def open(self):
        self.opened = True
        if self.logged_out:  # during the upgrade
            self.log_out()
            return
        for text in self.early:
            self.deliver(text)
        self.early = []
        logger.info("socket opened for %s", self.userid)

    def forget_if_never_opened(self):
        if not self.opened:  # the upgrade failed after prepare
            asyncio.ensure_future(self.channels.remove(self.channel, self))

    def on_message(self, message):
        """The browser has nothing to say; whatever it sends is ignored."""

    def on_close(self):
        if self.channel is not None:
            asyncio.ensure_future(self.channels.remove(self.channel, self))

    def log_out(self):
        """Close the socket: its user logged out of Plone."""
        self.logged_out = True
        if self.opened:
            logger.info("socket of %s closed: logged out of Plone", self.userid)
            self.close(*LOGGED_OUT)

    def deliver(self, text):
        if not self.opened:
            self.early.append(text)
            return
        try:
            self.write_message(text)
        except websocket.WebSocketClosedError:
            pass


def make_app(channels, plone_url, allowed_origins=None):
    """The Tornado application: the websocket at :data:`SOCKET_PATH`.

    ``allowed_origins`` defaults to the origin of ``plone_url``. The limits
    are read from :mod:`~ploneintranet.asynctasks.celeryconfig` now.
    """
    origins = [value.rstrip("/").lower() for value in allowed_origins or [origin(plone_url)]]
    options = dict(
        channels=channels,
        authenticate=PloneAuthenticator(plone_url),
        allowed_origins=origins,
        max_sockets=celeryconfig.ASYNC_PUSH_MAX_SOCKETS_PER_USER,
        upgrade_timeout=celeryconfig.ASYNC_PUSH_UPGRADE_TIMEOUT,
    )
    # A ping every half idle timeout, answered within the other half: a
    # silent socket is closed at most ASYNC_PUSH_IDLE_TIMEOUT after its last pong.
    half_idle = celeryconfig.ASYNC_PUSH_IDLE_TIMEOUT / 2
    return web.Application(
        [(SOCKET_PATH, PushSocket, options)],
        websocket_max_message_size=celeryconfig.ASYNC_PUSH_MAX_MESSAGE_BYTES,
        websocket_ping_interval=half_idle,
        websocket_ping_timeout=half_idle,
    )


def listen(app, port, address):
    """Serve ``app`` on ``address:port``; return the ``HTTPServer``.

    A client that has not sent its whole request within
    ``ASYNC_PUSH_UPGRADE_TIMEOUT`` seconds is disconnected, and a request
    with a body is refused: a websocket upgrade has none.
    """
    timeout = celeryconfig.ASYNC_PUSH_UPGRADE_TIMEOUT
    return app.listen(
        port,
        address,
        xheaders=False,
        idle_connection_timeout=timeout,
        body_timeout=timeout,
        max_body_size=0,
    )
