"""The exceptions of ploneintranet.asynctasks (re-exported by ``core``)."""


class AsyncTaskError(Exception):
    """A job cannot be prepared or queued: the message says what to change."""


class DispatchError(AsyncTaskError):
    """Sending a job failed in a way that may pass; the Celery task retries."""


class JobRefused(AsyncTaskError):
    """Plone, or the worker's own checks, refused the job; retrying would not
    help."""


class AuthorizationError(JobRefused):
    """Plone did not accept the job's user: login form, 401/403 or
    "Insufficient Privileges". Not retried."""
