"""Validation flow: Great Expectations on RAW's train.csv and on OUT's decoded set.

mammo validate --raw RAW --data OUT
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.config import load_config
from tasks.settings import default_out
from tasks.storage import absolute_uri
from tasks.validate import validate_data


@flow(name="validate")
def validate(
    raw: str,
    data: str = "",
    validation: dict[str, Any] | None = None,
    config: str | None = None,
) -> dict[str, Any]:
    """Both suites on the manifest under ``data``; the outcome is recorded under its hash.

    ``validation`` (bands) overrides the [validation] section of the ``config`` file.
    """
    bands = load_config(config).merged("validation", validation)
    return validate_data(raw, absolute_uri(data or default_out()), bands)


if __name__ == "__main__":
    from flows.cli import main

    main(["validate", *__import__("sys").argv[1:]])
