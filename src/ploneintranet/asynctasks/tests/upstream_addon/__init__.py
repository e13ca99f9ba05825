"""A Plone add-on written exactly as the seed and upstream's
ploneintranet.asynctasks 7.2 teach, ported by renaming the import path only:
its own Celery task, preprocessor, worker view and ZCML. The tests run it end
to end (tests/test_porting.py)."""
