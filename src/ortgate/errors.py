"""The project's exception types. Every message says what to fix next."""


class OrtgateError(Exception):
    """Base class: a problem the user can act on (bad input, missing file, unreachable hub)."""


class ConfigError(OrtgateError):
    """An option or `[tool.ortgate]` setting is invalid."""


class ModelError(OrtgateError):
    """The model directory or hub id cannot be used."""


class DataError(OrtgateError):
    """The dataset cannot be used: missing file, column, labels, or no rows."""


class BuildError(OrtgateError):
    """A variant could not be built."""


class DownloadError(OrtgateError):
    """A package that carries the default model or data could not be fetched or verified."""
