Least privilege: headers and cookies that could smuggle in others are
refused; ``ASYNC_ALLOWED_ORIGINS`` for the worker; the registry record
``ploneintranet.asynctasks.portal_url_replacement_mapping`` (upgrade step
1000 to 1001) sends jobs to an internal address; Celery's log of
unrunnable messages no longer shows their credentials.
