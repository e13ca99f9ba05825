Websockets push: the Tornado push server ``asynctasks-push``
(``python -m ploneintranet.asynctasks.push``) authenticates each socket
against Plone's ``@@async-push-user`` with the ``__ac`` cookie and relays
the user's Redis channel; the ``pat-push`` browser resource replaces
placeholders; the first user is the debounced ``GeneratePreview`` job
(image scales, first page of a PDF) with its ``done``/``failed`` messages.
Tested end to end in headless Chromium (``make chromium``); a ``push``
program in supervisor.cfg (``make run`` and ``make run-zeo``, port PORT+5);
``make bench-push`` measures one push server holding 1,000 sockets. See
docs/push.rst.
