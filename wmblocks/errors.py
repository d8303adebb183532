"""The one exception type for mistakes a user can act on."""


class UserError(ValueError):
    """A problem in what the user asked for (an unknown environment id or preset, an
    unsupported space, an existing run directory, a corrupt or foreign checkpoint),
    with a message that names it and how to fix it.

    The recipes' command line (:func:`wmblocks.train.loop.run`) prints exactly these as
    one line and exits with status 2; every other exception is a bug and keeps its
    traceback. A ``ValueError`` subclass, so code that catches ``ValueError`` still
    does.
    """
