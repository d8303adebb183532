"""wmblocks: world-model building blocks for the Dreamer series (V1, V2, V3).

Layers (each imports only those above it):
    wmblocks.functional  pure tensor maths
    wmblocks.dists       distributions built on the maths
    wmblocks.nn          modules that own parameters or state

A trained run, to act or to export: ``wmblocks.load_policy(run_dir)`` and
``wmblocks.export_policy(run_dir, path)`` (:mod:`wmblocks.train.policy`).
"""

__version__ = "0.2.0"

# Using a trained agent (wmblocks.train.policy), imported on first use: ``import
# wmblocks`` stays light.
_LAZY = {
    "load_policy": "wmblocks.train.policy",
    "export_policy": "wmblocks.train.policy",
    "Policy": "wmblocks.train.policy",
}
__all__ = ["Policy", "__version__", "export_policy", "load_policy"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'wmblocks' has no attribute {name!r}")
