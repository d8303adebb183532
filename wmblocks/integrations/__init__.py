"""Bridges from wmblocks' blocks to other libraries.

    wmblocks.integrations.torchrl   TensorDictModule forms of the blocks and the world
                                    model as a torchrl model-based environment
                                    (docs/torchrl.md)

Each bridge is imported on its own (``import wmblocks.integrations.torchrl``), so
``import wmblocks`` never loads the library it bridges to.
"""
