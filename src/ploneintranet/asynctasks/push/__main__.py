"""Run the push server: ``python -m ploneintranet.asynctasks.push``.

Settings come from :mod:`ploneintranet.asynctasks.celeryconfig`
(``ASYNC_PUSH_*``); ``--port`` and ``--address`` override the port and address.
"""

import argparse
import asyncio
import logging
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks.push.server import Channels
from ploneintranet.asynctasks.push.server import listen
from ploneintranet.asynctasks.push.server import make_app
from ploneintranet.asynctasks.wire import masked_url
import signal


logger = logging.getLogger("ploneintranet.asynctasks.push")


async def serve(port, address):
    """Serve sockets until SIGTERM or SIGINT."""
    channels = Channels(celeryconfig.ASYNC_PUSH_REDIS_URL)
    app = make_app(channels, celeryconfig.ASYNC_PUSH_PLONE_URL, celeryconfig.ASYNC_PUSH_ALLOWED_ORIGINS)
    server = listen(app, port, address)
    delivering = asyncio.ensure_future(channels.run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logger.info(
        "push server on ws://%s:%s/push, authenticating against %s, Redis %s",
        address,
        port,
        celeryconfig.ASYNC_PUSH_PLONE_URL,
        masked_url(celeryconfig.ASYNC_PUSH_REDIS_URL),
    )
    await stop.wait()
    server.stop()
    delivering.cancel()
    await channels.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description="ploneintranet.asynctasks websocket push server")
    parser.add_argument("--port", type=int, default=celeryconfig.ASYNC_PUSH_PORT)
    parser.add_argument("--address", default=celeryconfig.ASYNC_PUSH_ADDRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(args.port, args.address))


if __name__ == "__main__":
    main()
