"""The error a lineage lookup raises."""


class LineageNotFoundError(LookupError):
    """The model version or event asked about does not exist."""
