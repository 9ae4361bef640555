"""User-facing error types: each carries a one-line message that names the file, line and problem."""


class NeuroSpiceError(Exception):
    """Base class for errors caused by user input (printed as one line, exit code 2)."""


class NetlistError(NeuroSpiceError):
    """A netlist could not be parsed or is inconsistent; message starts with ``file:line:``."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        self.file = file
        self.line = line
        where = f"{file}:{line}: " if file is not None and line is not None else (f"{file}: " if file else "")
        super().__init__(f"{where}{message}")


class ConfigError(NeuroSpiceError):
    """A circuit/params configuration is invalid (unknown parameter, value out of range ...)."""


class NgspiceError(NeuroSpiceError):
    """ngspice is missing or failed."""


class ConvergenceError(NeuroSpiceError):
    """The reference solver failed to converge."""
