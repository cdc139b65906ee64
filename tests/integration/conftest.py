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
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for net in nets:
        exited = {i: proc.poll() for i, proc in net.procs.items()}
        net.stop_all()
        if failed:  # one line per node first: a long log may be cut where it is shown
            for i in net.procs:
                print(f"node{i}: {'running' if exited[i] is None else f'exited {exited[i]}'} at the end, "
                      f"last final height in its log {net.last_final(i)}")
            for i in net.procs:
                print(f"--- node{i} log ---\n{net.log_tail(i)}")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
