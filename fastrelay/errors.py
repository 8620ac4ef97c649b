"""Errors of the control plane: each carries the one line shown to the user."""

__all__ = ["RelayError", "TargetError", "StartError", "ConfigProblem", "ConfigError"]


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


class ConfigProblem:
    """One thing wrong in a config file: where (line, dotted key) and what."""

    def __init__(self, line: int | None, key: str, message: str) -> None:
        self.line = line
        self.key = key
        self.message = message

    def text(self, path: str) -> str:
        """'FILE:LINE: KEY: MESSAGE' (LINE or KEY left out when unknown)."""
        where = f"{path}:{self.line}" if self.line is not None else path
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(RelayError):
    """A config file that cannot be read or is not valid: every problem, one per line."""

    def __init__(self, path: str, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(p.text(path) for p in problems))
        self.path = path
        self.problems = problems
