Port upstream code unchanged: ``AbstractAsyncView`` (``template``,
``ADDITIONAL_PARAMETERS``, ``authenticated()``, stricter than upstream's),
``AbstractPost.transform_url``, ``celerytasks.add(x, y, delay=1)``, the
seed's ``generate_and_add_preview`` and ``@@generate-previews``,
``status.StatusView``, upstream's testing names (``FIXTURE``,
``INTEGRATION_TESTING``, ``FUNCTIONAL_TESTING``, ``CELERY_FIXTURE``,
``BaseTestCase`` with ``basic_auth``, ``waitfor``, ``redis_running``);
``@@async-status`` and ``@@async-checktask`` on every navigation root; worker
layers take ``imports`` (``celery -I``). A test add-on written as upstream
teaches runs end to end. docs/porting.rst lists every upstream name.
