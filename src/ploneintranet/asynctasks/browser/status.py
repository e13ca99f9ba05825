"""``@@async-status``: a self-test of the whole async pipeline.

If the unit tests pass but this view does not, it is a deployment issue: the
message of each check says where to look.

A GET (a link, a bookmark, a monitor) runs only the checks that send nothing:
credentials, broker, worker and lost jobs. The two round trips send jobs, so
they run only for a POST that carries the Manager's plone.protect
authenticator: the page's button, or a monitor that posts the
``authenticator`` of the JSON answer back.

The page is in the user's language. The JSON keeps what monitors parse
stable: ``name`` and ``status`` are identifiers and ``message`` is English
whatever the language; ``title`` and ``text`` are the name and the message
in the language Plone negotiated for the request, for a user interface.
"""

from Acquisition import aq_base
from celery.exceptions import TimeoutError as CeleryTimeout
import json
from plone.protect.authenticator import check as check_authenticator
from plone.protect.authenticator import createToken
from ploneintranet.asynctasks import celeryconfig
from ploneintranet.asynctasks import celerytasks
from ploneintranet.asynctasks import jobtoken
from ploneintranet.asynctasks import ledger
from ploneintranet.asynctasks import outbox
from ploneintranet.asynctasks import tasks
from ploneintranet.asynctasks.broker import is_amqp
from ploneintranet.asynctasks.browser.views import CHECKSUM_KEY
from ploneintranet.asynctasks.browser.views import CheckTaskView
from ploneintranet.asynctasks.core import AsyncTaskError
from ploneintranet.asynctasks.core import capture_credentials
from ploneintranet.asynctasks.i18n import _
from ploneintranet.asynctasks.i18n import english
from ploneintranet.asynctasks.i18n import translated
from ploneintranet.asynctasks.wire import masked_url
from Products.Five.browser import BrowserView
from Products.Five.browser.pagetemplatefile import ViewPageTemplateFile
import time
import transaction
import uuid
from zope.annotation.interfaces import IAnnotations
from zope.component.hooks import getSite


OK, WARN, FAIL = "OK", "WARN", "FAIL"
#: A round trip that a GET does not run (it would send a job).
NOT_RUN = "NOT RUN"
ROUND_TRIPS = ("task round trip", "http round trip")

#: The checks' names (identifiers in the JSON) as people read them.
TITLES = {
    "credentials": _("credentials"),
    "broker": _("broker"),
    "waiting jobs": _("waiting jobs"),
    "worker": _("worker"),
    "task round trip": _("task round trip"),
    "http round trip": _("http round trip"),
    "lost jobs": _("lost jobs"),
}
#: The statuses (identifiers in the JSON) as the page shows them.
STATUS_LABELS = {OK: _("OK"), WARN: _("WARN"), FAIL: _("FAIL"), NOT_RUN: _("NOT RUN")}


class AsyncStatusView(BrowserView):
    """Run the checks; render HTML, or JSON with ``format=json``.

    JSON: ``{"ok": bool, "round_trips": bool, "authenticator": token,
    "checks": [{"name", "status", "message", "title", "text"}]}``, answered
    with HTTP 200 when every check that ran is OK and 503 otherwise. ``name``,
    ``status`` (``OK``, ``WARN``, ``FAIL`` or ``NOT RUN``) and ``message``
    (English) are for monitors; ``title`` and ``text`` are the name and the
    message in the request's language. The round trips run only for a POST
    with a valid ``_authenticator`` (403 for a forged one).
    """

    template = ViewPageTemplateFile("templates/status.pt")

    #: Seconds to wait for the broker, a worker's ping and each round trip.
    broker_timeout = 3.0
    ping_timeout = 2.0
    roundtrip_timeout = 20.0

    def __call__(self):
        round_trips = self.request.method == "POST"
        if round_trips:
            check_authenticator(self.request)  # Forbidden unless the token is valid
        report = self.report(round_trips)
        response = self.request.response
        response.setHeader("Cache-Control", "no-store")
        if self.request.form.get("format") == "json":
            response.setHeader("Content-Type", "application/json")
            response.setStatus(200 if self.ok else 503)
            return json.dumps(report)
        return self.template()

    def report(self, round_trips=False):
        """Run the checks (the round trips only if ``round_trips``) and return
        the JSON answer's dict; also the REST service ``@async-status``'s."""
        self.round_trips = round_trips
        self.checks = [self.entry(check) for check in self.run_checks(round_trips)]
        self.ok = all(check["status"] in (OK, NOT_RUN) for check in self.checks)
        return {
            "ok": self.ok,
            "round_trips": round_trips,
            "authenticator": createToken(),
            "checks": self.checks,
        }

    def entry(self, check):
        """The JSON entry of ``check``: its message in English, and its name
        and message in the request's language."""
        return {
            "name": check["name"],
            "status": check["status"],
            "message": english(check["message"]),
            "title": translated(TITLES[check["name"]], self.request),
            "text": translated(check["message"], self.request),
        }

    def summary(self):
        """The sentence above the table, in the request's language."""
        if not self.ok:
            return translated(_("Some checks did not pass"), self.request)
        if self.round_trips:
            return translated(_("All checks OK"), self.request)
        return translated(
            _("All checks OK so far: run the round trips to test a job end to end"),
            self.request,
        )

    def status_label(self, status):
        """``status`` as the page shows it, in the request's language."""
        return translated(STATUS_LABELS[status], self.request)

    def run_checks(self, round_trips=True):
        """Return the checks, in order; later ones are skipped when the
        broker or the workers are missing, the round trips unless
        ``round_trips``."""
        checks = [self.check_credentials(), self.check_broker(), self.check_outbox()]
        if checks[1]["status"] == FAIL:
            return checks + [
                _check(name, FAIL, _("skipped: the broker is unreachable"))
                for name in ("worker", "task round trip", "http round trip", "lost jobs")
            ]
        checks.append(self.check_worker())
        if checks[-1]["status"] == FAIL:
            return checks + [
                _check(name, FAIL, _("skipped: no worker answers"))
                for name in ("task round trip", "http round trip", "lost jobs")
            ]
        if round_trips:
            checks.append(self.check_task_roundtrip())
            checks.append(self.check_http_roundtrip(credentials_ok=checks[0]["status"] == OK))
        else:
            checks += [
                _check(name, NOT_RUN, _("sends a job: press Run the round trips (a POST with your authenticator)"))
                for name in ROUND_TRIPS
            ]
        checks.append(self.check_lost_jobs())
        return checks

    def check_credentials(self):
        if celeryconfig.ASYNC_CREDENTIALS == "token":
            return self.check_job_token()
        cookies, headers = capture_credentials(self.request)
        found = sorted(cookies) + sorted(headers)
        if not found:
            return _check(
                "credentials",
                FAIL,
                _(
                    "neither the __ac cookie nor an Authorization header is in "
                    "this request: jobs could not act as you. Log in through "
                    "Plone's login form or with HTTP Basic / Bearer authentication"
                ),
            )
        return _check("credentials", OK, _("found ${names}", mapping={"names": ", ".join(found)}))

    def check_job_token(self):
        if getattr(aq_base(self.context.acl_users), jobtoken.PLUGIN_ID, None) is None:
            return _check(
                "credentials",
                FAIL,
                _(
                    "the job token plugin (${plugin}) is not in acl_users, "
                    "so jobs cannot act as their users: run the upgrade steps of "
                    "ploneintranet.asynctasks in Site Setup > Add-ons",
                    mapping={"plugin": jobtoken.PLUGIN_ID},
                ),
            )
        return _check(
            "credentials",
            OK,
            _(
                "jobs carry a signed job token, valid for one url for ${seconds} s, never your login",
                mapping={"seconds": celeryconfig.ASYNC_TOKEN_LIFETIME},
            ),
        )

    def check_broker(self):
        app = celerytasks.app
        connection = app.connection_for_write(
            transport_options={
                "socket_connect_timeout": self.broker_timeout,
                "socket_timeout": self.broker_timeout,
            }
        )
        where = masked_url(app.conf.broker_url)
        try:
            with connection:
                connection.ensure_connection(max_retries=1, timeout=self.broker_timeout)
        except Exception as error:
            return _check(
                "broker",
                FAIL,
                _(
                    "cannot reach ${where} (${error}); start the broker (Redis, its "
                    "sentinels or RabbitMQ) or set BROKER_URL for Plone and the worker",
                    mapping={"where": where, "error": f"{type(error).__name__}: {masked_url(str(error))}"},
                ),
            )
        if not celeryconfig.ASYNC_ENABLED:
            return _check(
                "broker",
                WARN,
                _("reachable at ${where}, but ASYNC_ENABLED=false runs jobs eagerly", mapping={"where": where}),
            )
        return _check("broker", OK, _("reachable at ${where}", mapping={"where": where}))

    def check_outbox(self):
        jobs, since = outbox.waiting(getSite())
        if not jobs:
            return _check("waiting jobs", OK, _("none: the jobs of every save reached the broker"))
        return _check(
            "waiting jobs",
            WARN,
            _(
                "${jobs} job(s) of saves made while the broker did not answer wait in this "
                "site's outbox, the oldest for ${minutes} min; they are sent with the "
                "first request after the broker answers again",
                mapping={"jobs": jobs, "minutes": f"{(time.time() - since) / 60:.0f}"},
            ),
        )

    def check_worker(self):
        app = celerytasks.app
        # A connection of its own: after Redis restarted, a pooled one can
        # stay deaf to the replies for good.
        with app.connection_for_write() as connection:
            replies = app.control.ping(timeout=self.ping_timeout, connection=connection)
        names = sorted(name for reply in replies for name in reply)
        if not names:
            return _check(
                "worker",
                FAIL,
                _(
                    "no Celery worker answered a ping within ${seconds} s; "
                    "start one: celery -A ploneintranet.asynctasks.celerytasks worker",
                    mapping={"seconds": f"{self.ping_timeout:g}"},
                ),
            )
        return _check(
            "worker",
            OK,
            _("${count} answered: ${names}", mapping={"count": len(names), "names": ", ".join(names)}),
        )

    def check_task_roundtrip(self):
        result = celerytasks.add.apply_async((2, 3, 0))
        try:
            value = result.get(timeout=self.roundtrip_timeout)
        except CeleryTimeout:
            return _check(
                "task round trip",
                FAIL,
                _(
                    "add(2, 3) got no result within ${seconds} s; check that the worker "
                    "consumes the default queue and that CELERY_RESULT_BACKEND is the "
                    "same for Plone and the worker",
                    mapping={"seconds": f"{self.roundtrip_timeout:g}"},
                ),
            )
        returned = _("add(2, 3) returned ${value}", mapping={"value": repr(value)})
        return _check("task round trip", OK if value == 5 else FAIL, returned)

    def check_http_roundtrip(self, credentials_ok):
        if not credentials_ok:
            return _check("http round trip", FAIL, _("skipped: no credentials to send"))
        checksum = uuid.uuid4().hex
        job = tasks.Post(self.context, self.request)
        url = self.context.absolute_url() + "/@@async-checktask"
        try:
            result = job(url="@@async-checktask", data={"checksum": checksum}, immediate=True)
        except AsyncTaskError as error:
            return _check("http round trip", FAIL, _("no job was sent: ${error}", mapping={"error": str(error)}))
        try:
            result.get(timeout=self.roundtrip_timeout, propagate=False)
        except CeleryTimeout:
            return _check(
                "http round trip",
                FAIL,
                _(
                    "the POST to ${url} did not finish within ${seconds} s; check that the worker can reach this url",
                    mapping={"url": url, "seconds": f"{self.roundtrip_timeout:g}"},
                ),
            )
        if result.failed():
            return _check(
                "http round trip",
                FAIL,
                _("the POST to ${url} failed: ${error}", mapping={"url": url, "error": str(result.result)}),
            )
        # This view wrote nothing: start a new transaction to see the worker's.
        transaction.abort()
        stored = IAnnotations(self.context).get(CHECKSUM_KEY)
        if stored != checksum:
            return _check(
                "http round trip",
                FAIL,
                _(
                    "the POST to ${url} answered ${answer} but the checksum was not "
                    "stored; is the worker view reached on another site?",
                    mapping={"url": url, "answer": str(result.result)},
                ),
            )
        return _check("http round trip", OK, _("POST ${url} stored the checksum", mapping={"url": url}))

    def check_lost_jobs(self):
        app = celerytasks.app
        if not ledger.keeps_ledger(app) and is_amqp(app.conf.broker_url):
            return _check(
                "lost jobs",
                OK,
                _(
                    "RabbitMQ keeps every job until a worker acknowledges it as done, and "
                    "hands it out again when that worker's connection closes: no ledger is needed"
                ),
            )
        if not ledger.keeps_ledger(app) and app.conf.task_always_eager:
            return _check("lost jobs", OK, _("none can be lost: ASYNC_ENABLED=false runs jobs at once"))
        try:
            jobs, missing = ledger.summary(celerytasks.app)
        except AsyncTaskError as error:
            return _check(
                "lost jobs",
                WARN,
                _(
                    "${error}; without it, a job a killed worker loses is not sent again",
                    mapping={"error": str(error)},
                ),
            )
        if missing:
            return _check(
                "lost jobs",
                WARN,
                _(
                    "${missing} of ${jobs} job(s) in flight vanished from the queues and "
                    "will be sent again: a worker died while taking them; see the "
                    "worker log and Troubleshooting, 'vanished from the queues'",
                    mapping={"missing": missing, "jobs": jobs},
                ),
            )
        return _check(
            "lost jobs",
            OK,
            _(
                "none: ${jobs} job(s) sent and not finished, each waiting or taken by a worker",
                mapping={"jobs": jobs},
            ),
        )


def _check(name, status, message):
    """A check's outcome; ``message`` is a message of the domain, translated
    by :meth:`AsyncStatusView.entry`."""
    return {"name": name, "status": status, "message": message}


#: Upstream's names (ploneintranet.asynctasks 7.2), for code ported unchanged.
StatusView = AsyncStatusView
__all__ = ["AsyncStatusView", "CheckTaskView", "StatusView"]
