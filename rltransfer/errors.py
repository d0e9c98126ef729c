"""User-facing errors.

Every user mistake raises an `RLTransferError` subclass whose message names the bad input
and how to fix it; the CLI prints that one line and exits with status 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RLTransferError(Exception):
    """A mistake in the user's input; the message says how to fix it."""


class UnknownEnvError(RLTransferError):
    """The environment id is not registered with Gymnasium."""


class MissingDependencyError(RLTransferError):
    """The environment needs a package that is not installed."""


class ParameterError(RLTransferError):
    """An environment parameter is unknown or its value is invalid."""


class AlgorithmError(RLTransferError):
    """Unknown algorithm, or one that does not fit the action space."""


class HyperparameterError(RLTransferError):
    """An unknown or malformed hyperparameter override."""


class CheckpointError(RLTransferError):
    """A source checkpoint is missing, corrupt, unsafe or incompatible."""


class TransferError(RLTransferError):
    """Source and target policies share nothing that can be transferred."""


class ConfigError(RLTransferError):
    """A bad option value or config file."""


class OutputError(RLTransferError):
    """The output folder cannot be written, or would overwrite a study."""


class SourceFailedError(RLTransferError):
    """The source run failed, so no transfer run of the study could start."""


class EncoderError(RLTransferError):
    """An unknown or unusable pixel encoder, its weights, or its image input."""


class StorageError(RLTransferError):
    """The study folder's disk failed mid-study (full, read-only, no access, I/O error): the
    study stopped; it resumes once the cause is fixed. Exit status 1: not the input's fault."""

    exit_status = 1


def did_you_mean(word: str, choices: Iterable[str], n: int = 3) -> str:
    """A ' Did you mean ...?' suffix for `word`, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"
