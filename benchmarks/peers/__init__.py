"""Peer implementations that the benchmarks compare wmblocks against."""
