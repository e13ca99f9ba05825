"""Tests of the Redis pipeline, run again on the layer of another broker.

A test module of another broker subclasses the Redis tests that hold for
any broker and gives the subclass its own layer. zope.pytestlayer marks each
test case class it collects, in place, with the fixture of its layer, and
pytest hands a class's marks down to its subclasses: the subclass would set
up the Redis layer too, with its worker, next to its own. The module
therefore replaces, for its own tests only, the fixtures of the Redis layers
by fixtures that do nothing: ``globals().update(redis_layers_left_out())``.
"""

from ploneintranet.asynctasks.testing import ASYNC_PUSH_TESTING
from ploneintranet.asynctasks.tests.layers import PIPELINE_TESTING
import pytest
from zope.pytestlayer.fixture import get_fixture_name


#: The layers of the Redis tests that other brokers run again.
REDIS_LAYERS = (PIPELINE_TESTING, ASYNC_PUSH_TESTING)


def redis_layers_left_out(layers=REDIS_LAYERS):
    """``{attribute: fixture}``: for each of ``layers``, a fixture named as
    its function fixture that sets nothing up."""
    fixtures = {}
    for layer in layers:
        name = get_fixture_name(layer, "function")

        @pytest.fixture(name=name)
        def left_out():
            """The layer of the reused test's base class: not set up here."""

        fixtures[f"_left_out_{name}"] = left_out
    return fixtures
