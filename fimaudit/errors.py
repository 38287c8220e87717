"""One exception tree for the whole library.

Only ``fimaudit.cli`` turns these into exit codes and one-line messages; library code raises them
with a message that already reads well on its own (what is wrong, and what to do about it).
"""


class FimauditError(Exception):
    """Base of every error fimaudit raises on purpose (bad input, unsupported model, ...)."""


class ModelError(FimauditError):
    """The model file cannot be read, validated or run."""


class InputError(FimauditError):
    """User-supplied data or arguments do not fit the model or are malformed."""


class UnsupportedOpError(FimauditError):
    """A node on the differentiable path has no gradient rule (or cannot be differentiated)."""

    def __init__(self, message: str, missing_ops: "list[str] | None" = None) -> None:
        super().__init__(message)
        self.missing_ops = sorted(set(missing_ops or []))


class NotDifferentiableError(UnsupportedOpError):
    """The chosen input does not reach the output through differentiable operations."""


class ResourceError(FimauditError):
    """The requested computation would not fit the memory or size limits."""


class ModelTimeoutError(ResourceError):
    """One model evaluation ran past its time limit (``--timeout``) and was stopped."""


class OutputPathError(FimauditError):
    """A requested output file cannot be written (missing folder, no permission)."""
