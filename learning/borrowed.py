"""One module of an installed package, loaded from its file without running the package's
``__init__``.

Some packages import most of themselves on ``import package``: ``opacus`` its privacy engine,
optimizers and ``torch.distributed`` (+92 MB of private memory), ``scipy.optimize`` every solver
with ``scipy.special`` and ``numpy.f2py`` (+22 MB). A daemon needs one pure module of each (Opacus'
RDP analysis, scipy's compiled ``linear_sum_assignment``), so it loads that module alone: the
code and the results are the package's own.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_module(package: str, *parts: str, name: str, extension: bool = False) -> ModuleType:
    """``package/parts...`` (a ``.py`` file, or with ``extension`` a compiled module) as module
    ``name``; a compiled module's ``name`` must end in its file's own name (its init symbol).
    The module goes into ``sys.modules`` under ``name``, so a second call loads nothing."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(package)  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{package} is not installed")
    base = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    suffixes = importlib.machinery.EXTENSION_SUFFIXES if extension else [".py"]
    path = next((p for p in (base.with_name(base.name + s) for s in suffixes) if p.exists()), None)
    if path is None:
        raise ImportError(f"{package} has no module {'.'.join(parts)}")
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    sys.modules[name] = module
    return module
