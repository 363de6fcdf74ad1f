"""User-facing errors.

Every problem the user can fix (a bad file, a wrong column, an unknown config key) raises
:class:`ExploreError` with one line that names the input, what was expected, what was found
and how to fix it. The CLI prints that line without a traceback (``--debug`` shows it).
"""


class ExploreError(ValueError):
    """A problem with the user's input, with a one-line message that says how to fix it."""


class ImageError(ExploreError):
    """An image that cannot be used: unreadable, truncated, too large, or not an image."""


class SchemaError(ExploreError):
    """A data file whose columns or types do not match the expected schema."""


class ConfigError(ExploreError):
    """A config file or value that does not validate (unknown key, wrong type, bad value)."""
