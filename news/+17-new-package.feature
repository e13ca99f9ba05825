New package ``ploneintranet.asynctasks``, a Plone 6.2 add-on implementing the
ploneintranet.async design (renamed because ``async`` is a reserved word):
``core.AbstractPost`` and ``core.dispatch``, the ``tasks`` ``Post`` and
``ReindexObject``, the Celery app and tasks ``post``, ``reindex_object`` and
``add``, the CSRF-protected worker views ``@@reindex_object`` and
``@@async-checktask``, and the ``@@async-status`` self-test (HTML and JSON).
