"""The FL section of the genesis file (``genesis.app``): :class:`learning.settings.FLSettings`.

The settings type lives in ``learning/`` so the simulator runs the very same settings (and
defaults) a chain does; :meth:`FLSettings.from_app_state` reads and checks a genesis ``app``
section, including what a chain needs beyond a simulation. The node, the CLI and the benchmarks
import it from here, the application's side of the genesis.
"""

from learning.settings import FLSettings, SettingsError

__all__ = ["FLSettings", "SettingsError"]
