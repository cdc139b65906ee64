import pytest

from tests.hostile.harness import Victims
from tests.integration.conftest import make_testnet, pytest_runtest_makereport  # noqa: F401  (fixtures)


@pytest.fixture
def victims(make_testnet) -> Victims:  # noqa: F811  (the fixture imported above)
    """A 4-node counter-app testnet of real daemons that has finalized a few blocks."""
    net = make_testnet(4, slot_ms=1000)
    net.start_all()
    net.wait_height(2, timeout=60)
    return Victims(net)
