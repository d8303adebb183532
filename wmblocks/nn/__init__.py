"""Modules that own parameters or state."""

from wmblocks.nn.normalize import ReturnNormalizer

__all__ = ["ReturnNormalizer"]
