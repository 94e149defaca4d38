"""Import a script of bench/ by path, as the benchmarks import each other."""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO_ROOT, "bench")


def load_bench(name: str) -> ModuleType:
    """
    bench/C{name}.py as module C{name} (registered in sys.modules, as
    dataclasses need); bench/ is on sys.path only while it is executed.
    """
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, name + ".py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    sys.modules[name] = module
    sys.path.insert(0, BENCH)  # the scripts import each other by name
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module
