"""Errors that ortgen shows to its users.

Every error raised for bad input is an :class:`OrtgenError`: the CLI prints its message
(no traceback) and exits non-zero. Messages say what was wrong and what is allowed.
"""

from __future__ import annotations


class OrtgenError(Exception):
    """A problem the user can fix; the message explains it."""


class ModelSourceError(OrtgenError):
    """The MODEL argument does not point at a readable checkpoint."""


class UnsupportedModelError(OrtgenError):
    """The checkpoint's architecture has no exporter."""


class WeightMismatchError(OrtgenError):
    """The checkpoint's weights do not match what its config describes."""


class PackageError(OrtgenError):
    """A package directory is missing, incomplete or already exists."""


class GenerationSettingsError(OrtgenError, ValueError):
    """Generation settings that cannot work together."""


class PromptTooLongError(OrtgenError, ValueError):
    """A prompt (plus the tokens to generate) exceeds the model's positions."""


class QueueFullError(OrtgenError):
    """The scheduler's wait queue is full: try again later (HTTP 429)."""


class RequestTooLargeError(GenerationSettingsError):
    """A request that could never run within the scheduler's limits (KV budget, row capacity,
    running sequences), whatever else finishes first."""


class RequestCancelledError(OrtgenError):
    """The request was cancelled (by its caller, or because its generator closed)."""
