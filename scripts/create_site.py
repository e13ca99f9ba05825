"""Create the development Plone site; run by scripts/devserver.py.

Usage::

    .venv/bin/python scripts/create_site.py var/etc/zope.conf var/admin-password

Opens the ZODB of the Zope instance described by ``zope.conf`` (Plone must
not be running: FileStorage allows one process only), then, in one
transaction:

* sets the Zope root user ``admin`` (role Manager) with the password read
  from the password file;
* adds the Plone site ``Plone`` with the profiles Plone's own "Create a
  Classic Plone site" form installs (``plone.app.contenttypes:default`` and
  the Classic UI theme, ``plonetheme.barceloneta:default``), then
  ``ploneintranet.asynctasks:default``; in an existing site it installs
  whichever of the theme and the add-on is missing.

It can be run again: it changes only what is missing.
"""

import sys


SITE_ID = "Plone"
ADMIN = "admin"
ADDON = "ploneintranet.asynctasks"
#: Plone's Classic UI theme: without it the pages are unstyled.
THEME = "plonetheme.barceloneta"
#: As Plone's "Create a Classic Plone site" form (Products.CMFPlone's
#: AddPloneSite.default_extension_profiles), then the add-on.
EXTENSION_IDS = (
    "plone.app.contenttypes:default",
    f"{THEME}:default",
    f"{ADDON}:default",
)


def open_app(zope_conf):
    """Configure Zope from ``zope_conf`` and return its root with a request."""
    from AccessControl.SecurityManagement import newSecurityManager
    from AccessControl.users import system
    from Testing.makerequest import makerequest
    from zope.globalrequest import setRequest
    import Zope2
    from Zope2.Startup.run import make_wsgi_app

    make_wsgi_app({}, zope_conf)
    app = makerequest(Zope2.app())
    app.REQUEST["PARENTS"] = [app]
    setRequest(app.REQUEST)
    newSecurityManager(None, system)
    return app


def set_admin(app, password):
    users = app.acl_users
    if users.getUser(ADMIN) is None:
        users._doAddUser(ADMIN, password, ["Manager"], [])
        print(f"create_site: added the Zope root user {ADMIN!r}")
    else:
        # Zope's root PAS, through its plugins: PlonePAS's _doChangeUser
        # wants a user management plugin that only Plone's acl_users has.
        users.users.updateUserPassword(ADMIN, password)
        users.roles.assignRoleToPrincipal("Manager", ADMIN)
        print(f"create_site: set the password of the Zope root user {ADMIN!r}")


def ensure_site(app):
    from plone.base.utils import get_installer
    from Products.CMFPlone.factory import addPloneSite
    from zope.component.hooks import setSite

    if SITE_ID not in app.objectIds():
        print(f"create_site: adding the Plone site {SITE_ID!r} ...")
        site = addPloneSite(
            app,
            SITE_ID,
            title="Plone (ploneintranet.asynctasks development)",
            extension_ids=EXTENSION_IDS,
            setup_content=False,
        )
    else:
        site = app[SITE_ID]
    setSite(site)
    installer = get_installer(site, app.REQUEST)
    for product in (THEME, ADDON):
        if not installer.is_product_installed(product):
            print(f"create_site: installing {product} in {SITE_ID!r}")
            if not installer.install_product(product):
                raise SystemExit(f"create_site: could not install {product}")
    setSite(None)


def main(argv):
    if len(argv) != 3:
        raise SystemExit(__doc__)
    zope_conf, password_file = argv[1:]
    with open(password_file, encoding="utf-8") as f:
        password = f.read().strip()
    if not password:
        raise SystemExit(f"create_site: {password_file} is empty")

    build(zope_conf, password)
    print("create_site: done")


def build(zope_conf, password, then=None):
    """In one transaction: set the admin password, make the site, and call
    ``then(site)`` (with the site set as the current one) if given."""
    import transaction
    from zope.component.hooks import setSite

    app = open_app(zope_conf)
    try:
        set_admin(app, password)
        ensure_site(app)
        if then is not None:
            setSite(app[SITE_ID])
            then(app[SITE_ID])
        transaction.commit()
    except BaseException:
        transaction.abort()
        raise
    finally:
        app._p_jar.db().close()


if __name__ == "__main__":
    main(sys.argv)
