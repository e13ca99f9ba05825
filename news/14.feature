Translations: every message of ``@@async-status``, the
control panel, the previews and the profiles is in the domain
``ploneintranet.asynctasks``, with Dutch and German in ``locales/``, compiled
at start-up (``zope_i18n_compile_mo_files``, set by ``make run``, the test
instances and ``buildout.cfg``). The JSON keeps ``name``, ``status`` and
``message`` in English for monitors and adds ``title`` and ``text`` in the
request's language. ``make i18n`` (i18ndude) keeps the catalogs in sync;
``tests/test_i18n.py`` checks them and renders the pages in Dutch and German.
