``dispatch`` uses a pooled session without environment proxies or cookie
persistence, with connect and read timeouts, and does not follow redirects;
transient failures are retried with backoff and jitter, refusals
(401/403/4xx, login form) are not.
