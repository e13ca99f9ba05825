"""plone.restapi endpoints, for Volto and other REST clients.

Loaded only when plone.restapi is installed (``configure.zcml`` of the
package includes it with ``zcml:condition="installed plone.restapi"``):

* ``GET @async-status`` (:mod:`.status`): the checks of ``@@async-status``;
* ``@controlpanels/async-tasks`` (:mod:`.controlpanel`): the settings of
  Site Setup > Async tasks.
"""
