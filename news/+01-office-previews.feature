Previews of the documents intranets upload, and pat-push as a real pattern
(issue 15). Word, Excel, PowerPoint and OpenDocument files and rtf get the
first page of the PDF LibreOffice makes of them, in the worker view, under
``run_converter``'s limits (no network, time, memory), with a new profile
per conversion, the format's import filter forced and one LibreOffice at a
time per Plone process (a job that waits too long is answered 503 and
retried); a file above 25 MiB, a zip that unpacks to more than 256 MiB or
holds macros gets no preview unread by LibreOffice. A table of hostile files
(corrupt, no zip, zip bomb, external link and macro, password-protected,
empty) ends in "no preview" in time, leaving no file or process. ``pat-push``
is a Patternslib pattern in the page's registry, loaded by the resource
registry bundle ``ploneintranet-asynctasks-push``, and initialises on
content pat-inject brings later. Logging out closes the user's push sockets.
``python -m asynctasks_benchmarks.previews``: upload to preview on screen,
median 2.2 s (image), 2.3 s (PDF), 3.6 s (docx), 2 s of it the debounce.
