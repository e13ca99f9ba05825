"""The benchmark's browser: one keep-alive session, logged in as the editor."""

from asynctasks_benchmarks import site
import requests


class BenchError(RuntimeError):
    """A request of the benchmark did not get the answer it needs."""


class PloneClient:
    """Logged in as :data:`~asynctasks_benchmarks.site.USER`
    through Plone's login form, so requests (and the jobs they enqueue)
    carry the ``__ac`` cookie, as a browser's do."""

    def __init__(self, portal_url, password):
        self.portal_url = portal_url
        self.session = requests.Session()
        self.session.trust_env = False
        response = self.session.post(
            f"{portal_url}/login",
            data={
                "__ac_name": site.USER,
                "__ac_password": password,
                "buttons.login": "Log in",
                "came_from": portal_url,
            },
            allow_redirects=False,
            timeout=60,
        )
        if "__ac" not in self.session.cookies:
            raise BenchError(f"logging in as {site.USER} failed: {response.status_code} {response.text[:300]!r}")
        self.token = self.get("@@bench-token").text

    def url(self, path):
        return f"{self.portal_url}/{path}"

    def get(self, path, **params):
        response = self.session.get(self.url(path), params=params, timeout=120, allow_redirects=False)
        if response.status_code != 200:
            raise BenchError(f"GET {path}: {response.status_code} {response.text[:300]!r}")
        return response

    def post(self, path, **form):
        """POST ``form`` with the CSRF token to a view under the portal."""
        response = self.session.post(
            self.url(path),
            data=dict(form, _authenticator=self.token),
            timeout=120,
            allow_redirects=False,
        )
        if response.status_code != 200:
            raise BenchError(f"POST {path}: {response.status_code} {response.text[:300]!r}")
        return response
