"""The ``ct_assets`` code location, configured from the environment when it is loaded."""

from __future__ import annotations

import dagster as dg

from ct_assets.defs import build_definitions
from ct_assets.settings import Settings


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(Settings.from_env())
