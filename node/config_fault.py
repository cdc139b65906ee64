"""The ``[fault]`` section of ``config.toml``: evaluation-only misbehaviour.

Kept apart from the operational sections because nothing in it belongs on a real chain; the
behaviours themselves are in :mod:`node.faults`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from node.config_checks import ConfigError


@dataclass
class FaultConfig:
    """Evaluation-only misbehaviour, used to prove that misbehaviour is caught and punished, or
    coped with (the Byzantine delegate behaviours are in ``node.faults``).

    ``double_sign`` signs two blocks per own slot; ``withhold_votes`` never sends its own
    prevotes and precommits; ``lie_height`` makes ``/status`` claim a huge final height and
    ``/blocks`` serve nothing, slowly; ``flood_mempool`` keeps submitting valid fee-free
    transactions from the node's account; ``wrong_model`` proposes blocks with a wrong model
    hash; ``lying_partial`` proposes hierarchical rounds with one cluster's partial aggregate
    wrong (and everything else consistent with it); ``attack`` makes the node send poisoned updates (see ``learning.attacks``);
    ``clock_offset_ms`` runs the node's consensus and gossip on a wall clock that far off (a
    device whose time synchronisation failed).
    """

    double_sign: bool = False
    withhold_votes: bool = False
    lie_height: bool = False
    flood_mempool: bool = False
    wrong_model: bool = False
    lying_partial: bool = False
    attack: str = ""
    clock_offset_ms: int = 0

    def validate(self) -> None:
        from learning.attacks import DATA_ATTACKS, MODEL_ATTACKS

        if self.attack and self.attack not in MODEL_ATTACKS + DATA_ATTACKS:
            raise ConfigError(f"fault.attack must be one of {', '.join(MODEL_ATTACKS + DATA_ATTACKS)}, "
                              f"got {self.attack!r}")

    @property
    def any_enabled(self) -> bool:
        return any(getattr(self, f.name) for f in dataclasses.fields(self))
