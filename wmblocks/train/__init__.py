"""Training infrastructure: environments, replay, acting, logging, checkpoints, config.

Thin use of gymnasium and torchrl (environment wrapper, replay buffer with sequence
sampling over on-disk storage); nothing Dreamer-specific beyond the data layout of
:mod:`wmblocks.keys`.
"""
