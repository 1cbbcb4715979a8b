"""One errors module for the whole project.

Every error raised on purpose derives from :class:`CoalaError`; each subclass also inherits the builtin
that matches it, so ``except ValueError`` keeps working for callers who do not know this project.
Messages say what was expected, what was received, and where (file, row, field).
"""

from __future__ import annotations


class CoalaError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(CoalaError, ValueError):
    """A configuration value broke a rule (the message names field, rule and value)."""


class DataError(CoalaError, ValueError):
    """Input data is malformed: the message names the file and the row or line."""


class SchemaError(DataError):
    """A file's columns or types differ from the declared schema."""


class DuplicateError(DataError):
    """A key that must be unique (for example ``pair_id``) occurs more than once."""


class MissingInputError(CoalaError, FileNotFoundError):
    """A file, store or artifact that a stage needs does not exist."""


class StoreError(CoalaError, RuntimeError):
    """A feature store or artifact is incomplete, corrupt or in an unexpected state."""


class DiskFullError(StoreError):
    """A write failed for lack of space (ENOSPC, EDQUOT); the message names the file, and nothing was half-written."""


class ProvenanceMismatchError(StoreError, ValueError):
    """An artifact was made with a different config, dataset or model than the caller expects."""


class DimensionMismatchError(CoalaError, ValueError):
    """Array shapes disagree (for example features of width 576 given to a head fit on 768)."""


class NonFiniteError(DataError):
    """NaN or infinite values where finite numbers are required."""


class ModelLoadError(CoalaError, RuntimeError):
    """A language model could not be loaded or is not a causal LM."""


class NotBuiltError(CoalaError, NotImplementedError):
    """A command or feature that is part of the contract but not yet implemented."""
