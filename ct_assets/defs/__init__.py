"""Dagster wiring, by stage. Logic lives in the plain modules these files call."""

from __future__ import annotations

import dagster as dg

from ct_assets.defs.curation import training_dataset
from ct_assets.defs.deployment import champion_model
from ct_assets.defs.ingestion import raw_feedback, raw_predictions
from ct_assets.defs.jobs import retrain_job
from ct_assets.defs.resources import resources_from_settings
from ct_assets.defs.sensors import build_volume_sensor
from ct_assets.defs.training import candidate_model
from ct_assets.defs.validation import validation_report
from ct_assets.settings import Settings

ASSETS = [
    raw_feedback,
    raw_predictions,
    training_dataset,
    candidate_model,
    validation_report,
    champion_model,
]


def build_definitions(settings: Settings) -> dg.Definitions:
    """The whole code location for ``settings`` (paths under its CT_HOME)."""
    return dg.Definitions(
        assets=ASSETS,
        jobs=[retrain_job],
        sensors=[build_volume_sensor(settings, retrain_job)],
        resources=resources_from_settings(settings),
    )
