"""One small exception hierarchy; the CLI turns every MmemoError into a one-line ClickException."""


class MmemoError(Exception):
    """Base class of every error mmemo raises on purpose."""


class MediaError(MmemoError):
    """A file could not be decoded: missing, empty, corrupt, truncated, not media."""


class SchemaError(MmemoError):
    """A shard does not follow the current schema (or was written by an older one)."""


class ConfigError(MmemoError):
    """A configuration value is invalid."""


class LabelError(MmemoError):
    """A label table is malformed."""
