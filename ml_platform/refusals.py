"""The step failure of a window refused by a blocking check, as the raw assets and the feature
publish raise it."""

from collections.abc import Mapping

from dagster import Failure, MetadataValue


def window_of(partitions: list[str]) -> str:
    """The partition or the range a step ran on, as its refusal names it: ``2013-01-05``,
    ``2013-01-05..2013-01-09``, or "" for an unpartitioned asset."""
    if len(partitions) <= 1:
        return "".join(partitions)
    return f"{partitions[0]}..{partitions[-1]}"


def refused(description: str, metadata: Mapping[str, str]) -> Failure:
    """The step's failure: ``description`` its headline, each fact a text metadata entry, and
    not retried (the same rows fail the same way)."""
    return Failure(
        description=description,
        metadata={name: MetadataValue.text(text) for name, text in metadata.items()},
        allow_retries=False,
    )
