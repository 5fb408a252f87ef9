"""Lineage: model version <-> dataset version <-> daily partitions and events, both ways.

``ct-assets lineage --version N`` answers what a registered version was trained on: its
dataset (the ``ct.dataset_version`` tag), the event dates that dataset covers and what its
rows are made of. ``ct-assets lineage --event ID`` answers the other way: where an event
is in the log, how curation judged it, which datasets hold it and which model versions
were trained on them. Everything is read-only: nothing is created under ``CT_HOME``.
"""

from ct_assets.lineage.answers import event_lineage, version_lineage
from ct_assets.lineage.errors import LineageNotFoundError
from ct_assets.lineage.registry_view import parse_version
from ct_assets.lineage.render import render_event_lineage, render_version_lineage

__all__ = [
    "LineageNotFoundError",
    "event_lineage",
    "parse_version",
    "render_event_lineage",
    "render_version_lineage",
    "version_lineage",
]
