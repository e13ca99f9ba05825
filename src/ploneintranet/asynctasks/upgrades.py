"""Upgrade steps of the ``ploneintranet.asynctasks:default`` profile.

To add one: raise ``<version>`` in ``profiles/default/metadata.xml``, write a
function here that takes the ``portal_setup`` tool, and register it in
``upgrades.zcml`` with ``source`` the old version and ``destination`` the new.
Site administrators then run it from the Add-ons control panel.
"""

from plone.api import portal
from ploneintranet.asynctasks import pas
from ploneintranet.asynctasks.previews import settings as preview_settings


PROFILE = "profile-ploneintranet.asynctasks:default"


def import_registry(setup_tool):
    """1000 -> 1001: add the ``portal_url_replacement_mapping`` record."""
    setup_tool.runImportStepFromProfile(PROFILE, "plone.app.registry")


def install_job_token_plugin(setup_tool):
    """1001 -> 1002: add the job token PAS plugin (jobs stop carrying the
    user's login cookie or Authorization header)."""
    pas.install(portal.get().acl_users)


def add_previews_switch(setup_tool):
    """1002 -> 1003: add the ``previews_enabled`` record, on. Only this record
    is written: importing the profile's registry.xml again would empty the
    site's ``portal_url_replacement_mapping``."""
    portal.get_tool("portal_registry").registerInterface(
        preview_settings.IPreviewSettings, prefix=preview_settings.RECORD_PREFIX
    )


def add_control_panel(setup_tool):
    """1003 -> 1004: add Site Setup > Async tasks (the configlet of
    ``controlpanel.xml``). Only that import step runs: the registry records
    keep their values."""
    setup_tool.runImportStepFromProfile(PROFILE, "controlpanel", run_dependencies=False)
