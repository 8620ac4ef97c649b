"""Errors of the control plane: each carries the one line shown to the user."""

__all__ = ["RelayError", "TargetError", "StartError"]


class RelayError(Exception):
    """Base of the errors that end fastrelay with a one-line message."""

    exit_status = 1


class TargetError(RelayError):
    """A target argument that cannot be parsed (usage error)."""

    exit_status = 2

    def __init__(self, arg: str, reason: str) -> None:
        super().__init__(f"bad target {arg!r}: {reason}")
        self.arg = arg
        self.reason = reason


class StartError(RelayError):
    """An endpoint that could not be opened (port in use, connection refused, ...)."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}: {reason}")
        self.what = what
        self.reason = reason
