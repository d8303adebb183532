"""wmblocks: world-model building blocks for the Dreamer series (V1, V2, V3).

Layers (each imports only those above it):
    wmblocks.functional  pure tensor maths
    wmblocks.dists       distributions built on the maths
    wmblocks.nn          modules that own parameters or state
"""

__version__ = "0.1.0"
