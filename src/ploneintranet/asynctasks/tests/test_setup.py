"""The add-on installs, uninstalls and reinstalls cleanly."""

from plone import api
from plone.base.utils import get_installer
from plone.browserlayer.utils import registered_layers
from ploneintranet.asynctasks.browser.controlpanel import CONFIGLET_ID
from ploneintranet.asynctasks.browser.views import CHECKSUM_KEY
from ploneintranet.asynctasks.interfaces import IPloneintranetAsyncLayer
from ploneintranet.asynctasks.pas import PLUGIN_ID
from ploneintranet.asynctasks.pas import uninstall
from ploneintranet.asynctasks.previews import ENABLED_RECORD
from ploneintranet.asynctasks.testing import ASYNC_INTEGRATION_TESTING
from ploneintranet.asynctasks.urls import REPLACEMENT_MAPPING_RECORD
from Products.PluggableAuthService.interfaces.plugins import IAuthenticationPlugin
from Products.PluggableAuthService.interfaces.plugins import IExtractionPlugin
from Products.PluggableAuthService.interfaces.plugins import IRolesPlugin
import unittest
from zope.annotation.interfaces import IAnnotations


class TestSetup(unittest.TestCase):
    layer = ASYNC_INTEGRATION_TESTING

    def setUp(self):
        self.portal = self.layer["portal"]
        self.installer = get_installer(self.portal, self.layer["request"])

    def installed_parts(self):
        record = api.portal.get_registry_record(REPLACEMENT_MAPPING_RECORD, default="missing")
        plugins = self.portal.acl_users.plugins
        active = all(
            PLUGIN_ID in plugins.listPluginIds(interface)
            for interface in (IExtractionPlugin, IAuthenticationPlugin, IRolesPlugin)
        )
        return IPloneintranetAsyncLayer in registered_layers(), record, active

    def previews_switch(self):
        """The previews record's value, or ``"missing"``."""
        return api.portal.get_registry_record(ENABLED_RECORD, default="missing")

    def registry(self):
        return api.portal.get_tool("portal_registry")

    def configlet(self):
        """The Async tasks configlet of Site Setup, or ``None``."""
        for action in self.portal.portal_controlpanel.listActions():
            if action.getId() == CONFIGLET_ID:
                return action
        return None

    def footprint(self):
        """What of the site a profile can add or leave behind: registry
        records, configlets, browser layers, acl_users' objects, the site's
        annotations."""
        portal = self.portal
        return (
            {f"record {name}" for name in self.registry().records}
            | {f"configlet {action.getId()}" for action in portal.portal_controlpanel.listActions()}
            | {f"layer {layer.__identifier__}" for layer in registered_layers()}
            | {f"acl_users {name}" for name in portal.acl_users.objectIds()}
            | {f"annotation {key}" for key in IAnnotations(portal)}
        )

    def test_installed(self):
        self.assertTrue(self.installer.is_product_installed("ploneintranet.asynctasks"))
        self.assertEqual(self.installed_parts(), (True, {}, True))
        self.assertIs(self.previews_switch(), True)
        field = self.registry().records[ENABLED_RECORD].field
        self.assertEqual(field.title, "Make previews of uploaded Images and Files")
        self.assertIn("previews already made are kept", field.description)
        configlet = self.configlet()
        self.assertEqual(configlet.Title(), "Async tasks")
        self.assertEqual(configlet.getCategory(), "Products")
        self.assertEqual(configlet.permissions, ("Manage portal",))
        self.assertEqual(configlet.getActionExpression(), "string:${portal_url}/@@async-tasks-controlpanel")

    def test_install_adds_only_its_parts_and_uninstall_takes_them_all_away(self):
        IAnnotations(self.portal)[CHECKSUM_KEY] = "c0ffee"  # what a status round trip leaves
        with api.env.adopt_roles(["Manager"]):
            self.installer.uninstall_product("ploneintranet.asynctasks")
            uninstalled = self.footprint()
            self.installer.install_product("ploneintranet.asynctasks")
            installed = self.footprint()
            self.installer.uninstall_product("ploneintranet.asynctasks")
            self.assertEqual(self.footprint(), uninstalled)
        self.assertEqual(uninstalled - installed, set())
        added = installed - uninstalled
        self.assertLessEqual(
            {
                "record ploneintranet.asynctasks.portal_url_replacement_mapping",
                "record ploneintranet.asynctasks.previews_enabled",
                f"configlet {CONFIGLET_ID}",
                f"layer {IPloneintranetAsyncLayer.__identifier__}",
                f"acl_users {PLUGIN_ID}",
            },
            added,
        )
        # and nothing but the add-on's own parts (the push bundle's records, ...)
        self.assertEqual(sorted(item for item in added if "asynctasks" not in item), [])

    def test_uninstall_removes_layer_record_and_plugin_and_reinstall_restores_them(self):
        IAnnotations(self.portal)[CHECKSUM_KEY] = "c0ffee"
        with api.env.adopt_roles(["Manager"]):
            self.installer.uninstall_product("ploneintranet.asynctasks")
            self.assertFalse(self.installer.is_product_installed("ploneintranet.asynctasks"))
            self.assertEqual(self.installed_parts(), (False, "missing", False))
            self.assertEqual(self.previews_switch(), "missing")
            self.assertEqual(
                [name for name in self.registry().records if name.startswith("ploneintranet.asynctasks")],
                [],
            )
            self.assertNotIn(CHECKSUM_KEY, IAnnotations(self.portal))
            self.assertIsNone(self.configlet())
            self.installer.install_product("ploneintranet.asynctasks")
        self.assertEqual(self.installed_parts(), (True, {}, True))
        self.assertIs(self.previews_switch(), True)
        self.assertEqual(self.configlet().Title(), "Async tasks")

    def test_reinstalling_keeps_previews_switched_off(self):
        api.portal.set_registry_record(ENABLED_RECORD, False)
        self.portal.portal_setup.runAllImportStepsFromProfile("profile-ploneintranet.asynctasks:default")
        self.assertIs(self.previews_switch(), False)

    def test_upgrade_from_1000_adds_the_record(self):
        setup = self.portal.portal_setup
        api.portal.get_tool("portal_registry").records.__delitem__(REPLACEMENT_MAPPING_RECORD)
        setup.setLastVersionForProfile("ploneintranet.asynctasks:default", "1000")
        with api.env.adopt_roles(["Manager"]):
            self.installer.upgrade_product("ploneintranet.asynctasks")
        self.assertEqual(self.installed_parts(), (True, {}, True))
        self.assertEqual(setup.getLastVersionForProfile("ploneintranet.asynctasks:default"), ("1004",))

    def test_upgrade_from_1001_adds_the_job_token_plugin(self):
        uninstall(self.portal.acl_users)
        self.assertEqual(self.installed_parts(), (True, {}, False))
        setup = self.portal.portal_setup
        setup.setLastVersionForProfile("ploneintranet.asynctasks:default", "1001")
        with api.env.adopt_roles(["Manager"]):
            self.installer.upgrade_product("ploneintranet.asynctasks")
        self.assertEqual(self.installed_parts(), (True, {}, True))

    def test_upgrade_from_1002_adds_the_previews_switch_on(self):
        self.registry().records.__delitem__(ENABLED_RECORD)
        mapping = {"https://intranet.example.com": "http://127.0.0.1:8080/Plone"}
        api.portal.set_registry_record(REPLACEMENT_MAPPING_RECORD, mapping)
        setup = self.portal.portal_setup
        setup.setLastVersionForProfile("ploneintranet.asynctasks:default", "1002")
        with api.env.adopt_roles(["Manager"]):
            self.installer.upgrade_product("ploneintranet.asynctasks")
        self.assertIs(self.previews_switch(), True)
        self.assertEqual(
            self.registry().records[ENABLED_RECORD].field.title,
            "Make previews of uploaded Images and Files",
        )
        # only the new record is written: the admin's mapping stays
        self.assertEqual(self.installed_parts(), (True, mapping, True))
        self.assertEqual(setup.getLastVersionForProfile("ploneintranet.asynctasks:default"), ("1004",))

    def test_upgrade_to_1003_keeps_previews_switched_off(self):
        api.portal.set_registry_record(ENABLED_RECORD, False)
        self.portal.portal_setup.setLastVersionForProfile("ploneintranet.asynctasks:default", "1002")
        with api.env.adopt_roles(["Manager"]):
            self.installer.upgrade_product("ploneintranet.asynctasks")
        self.assertIs(self.previews_switch(), False)

    def test_upgrade_from_1003_adds_the_control_panel_and_keeps_the_settings(self):
        self.portal.portal_controlpanel.unregisterConfiglet(CONFIGLET_ID)
        self.assertIsNone(self.configlet())
        mapping = {"https://intranet.example.com": "http://127.0.0.1:8080/Plone"}
        api.portal.set_registry_record(REPLACEMENT_MAPPING_RECORD, mapping)
        api.portal.set_registry_record(ENABLED_RECORD, False)
        setup = self.portal.portal_setup
        setup.setLastVersionForProfile("ploneintranet.asynctasks:default", "1003")
        with api.env.adopt_roles(["Manager"]):
            self.installer.upgrade_product("ploneintranet.asynctasks")
        self.assertEqual(self.configlet().Title(), "Async tasks")
        self.assertEqual(self.installed_parts(), (True, mapping, True))
        self.assertIs(self.previews_switch(), False)
        self.assertEqual(setup.getLastVersionForProfile("ploneintranet.asynctasks:default"), ("1004",))
