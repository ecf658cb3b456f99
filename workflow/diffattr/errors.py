"""Errors that name the problem and the fix, shown to users without a deep traceback."""


class DiffattrError(Exception):
    """Base class: an error whose message tells the user what to do."""


class ConfigError(DiffattrError):
    """A configuration value is missing, inconsistent or out of range."""


class DatasetError(DiffattrError):
    """A dataset is missing or broken: the message names the expected file and how to get it."""


class ModelError(DiffattrError):
    """A model or checkpoint is missing or does not match the configuration."""


class ArtifactError(DiffattrError):
    """A result file is missing, unreadable, inconsistent with its neighbours or non-finite: the
    message names the file and how to make it again."""
