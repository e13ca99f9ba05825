Deployment: ``make run-zeo`` (ZEO, frontend and worker instances, HAProxy
routing by ``X-celery-task-name``, a Celery worker per queue, Flower),
``ASYNC_TASK_ROUTES``, ``etc/haproxy.cfg`` and ``etc/nginx.conf``, a routing
test with HAProxy in front of two instances on ZEO.
