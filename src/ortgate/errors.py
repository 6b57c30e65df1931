"""The project's exception types. Every message says what to fix next."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): what a one-line report shows."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class OrtgateError(Exception):
    """Base class: a problem the user can act on (bad input, missing file, unreachable hub)."""


class ConfigError(OrtgateError):
    """An option or `[tool.ortgate]` setting is invalid."""


class ModelError(OrtgateError):
    """The model directory or hub id cannot be used."""


class DataError(OrtgateError):
    """The dataset cannot be used: missing file, column, labels, or no rows."""


class BuildError(OrtgateError):
    """A variant could not be built. `reason` is the short cause a results table shows."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or first_line(self)

    def __reduce__(self):  # keep `reason` when a worker process sends the error back
        return type(self), (self.args[0], self.reason)


class NotApplicable(BuildError):
    """The variant does not apply to this model or machine (e.g. an fp16 GPU graph on a CPU-only machine)."""


class DownloadError(OrtgateError):
    """A package that carries the default model or data could not be fetched or verified."""


class Once:
    """A measurement a run makes once: its result, or the failure it raised, raised again to every later caller
    (a failed pass is not run again by each test that asks for it)."""

    def __init__(self, compute) -> None:
        self.compute, self.result, self.error = compute, None, None

    def __call__(self):
        if self.error is not None:
            raise self.error
        if self.result is None:
            try:
                self.result = self.compute()
            except Exception as exc:
                self.error = exc
                raise
        return self.result
