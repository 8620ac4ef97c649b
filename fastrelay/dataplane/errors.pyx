# Exceptions raised by the data plane.


class FrameError(ValueError):
    """A stream carried a frame length outside the allowed range."""
