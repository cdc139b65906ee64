import pytest

from tests.integration.harness import Testnet


@pytest.fixture
def make_testnet(tmp_path, request):
    """Factory for testnets; every daemon is stopped (and its log shown on failure) at teardown."""
    nets: list[Testnet] = []

    def make(n: int, **kwargs) -> Testnet:
        net = Testnet(tmp_path / f"net{len(nets)}", n, **kwargs)
        nets.append(net)
        return net

    yield make
    for net in nets:
        net.stop_all()
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            for i in net.procs:
                print(f"--- node{i} log ---\n{net.log_tail(i)}")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
