"""Federated-learning simulator: many virtual nodes in one process (see :mod:`learning.sim.engine`).

Every node runs the product's client pipeline (:mod:`learning.client`) and every aggregation the
product's round (:mod:`learning.round`), with the chain's FL settings. Typical use::

    from learning.sim import SimConfig, run_simulation
    result = run_simulation(SimConfig.of(dataset="digits", rule="multikrum", num_nodes=50,
                                         attack="sign_flip", byzantine_fraction=0.2))
    print(result.summary())
"""

from learning.sim.config import MODES, RoundStats, SimConfig, SimResult
from learning.sim.engine import Simulator


def run_simulation(cfg: SimConfig) -> SimResult:
    """Build a :class:`Simulator` for ``cfg`` and run it to the end."""
    return Simulator(cfg).run()


__all__ = ["MODES", "RoundStats", "SimConfig", "SimResult", "Simulator", "run_simulation"]
