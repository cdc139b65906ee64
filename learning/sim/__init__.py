"""Federated-learning simulator: many virtual nodes in one process (see :mod:`learning.sim.engine`).

Typical use::

    from learning.sim import SimConfig, run_simulation
    result = run_simulation(SimConfig(dataset="digits", num_nodes=50, rule="multikrum",
                                      attack="sign_flip", byzantine_fraction=0.2))
    print(result.summary())
"""

from learning.sim.config import DATASETS, MODES, RoundStats, SimConfig, SimResult
from learning.sim.engine import Simulator


def run_simulation(cfg: SimConfig) -> SimResult:
    """Build a :class:`Simulator` for ``cfg`` and run it to the end."""
    return Simulator(cfg).run()


__all__ = ["DATASETS", "MODES", "RoundStats", "SimConfig", "SimResult", "Simulator", "run_simulation"]
