"""User-facing errors: one specific line, exit code 2, no traceback (see cli.main)."""


class SimserveError(Exception):
    """Bad input or an impossible request: the message is shown to the user as is."""


class ConfigError(SimserveError):
    """A config key, value or combination that cannot be simulated."""


class CatalogError(SimserveError):
    """An unknown or malformed hardware, model or topology entry."""


class WorkloadError(SimserveError):
    """A trace or length profile that cannot be read; the message names the file and line."""


class CapacityError(SimserveError):
    """A model or layout that does not fit in GPU memory; the message says by how much."""
