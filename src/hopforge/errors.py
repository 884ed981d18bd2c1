"""One base exception for the package; subclasses name what and where.

The CLI prints ``str(err)`` of any :class:`HopforgeError` as one line and exits
non-zero; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class HopforgeError(Exception):
    """Base class for every error hopforge raises on purpose."""

    exit_code = 1


class ConfigError(HopforgeError):
    """A config file or option is invalid. The message names the key."""

    exit_code = 2


class DumpError(HopforgeError):
    """A dump cannot be read. The message names the file and byte offset."""


class StorageError(HopforgeError):
    """A shard, manifest or table is unreadable, corrupt or from a newer schema."""


class SchemaVersionError(StorageError):
    """Data was written by a newer schema version than this package knows."""


class SQLGuardError(HopforgeError):
    """A SQL statement was refused because it could write, attach, install or escape."""

    exit_code = 2


class ModelOutputError(HopforgeError):
    """Model output could not be parsed. Names the question / trajectory and turn."""


class TeacherError(HopforgeError):
    """The teacher server is unreachable, dead or keeps failing."""


class LeaseHeldError(HopforgeError):
    """Another process holds a lease this one needs. Names the lease, its holder and since when."""

    exit_code = 75  # EX_TEMPFAIL: try again later
