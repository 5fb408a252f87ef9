"""The stages of the loop as plain functions, one module each: what a Dagster asset (or a
command) calls to do its work. Each reads the event log, the tables or the registry, calls
the plain rooms below (``data/``, ``training/``) and returns a typed record the caller
renders; none imports Dagster.

- :mod:`~ct_assets.pipeline.curation`: event dates → validated feedback → attributed
  examples (per-date tables);
- :mod:`~ct_assets.pipeline.dataset_build`: a window of those tables → a versioned
  training dataset (``DatasetBuild``);
- :mod:`~ct_assets.pipeline.candidate_run`: a dataset → LightGBM candidates, the chosen
  one registered (``CandidateRun``);
- :mod:`~ct_assets.pipeline.gate_run`: a candidate against the champion → the gate's
  decision and report (``GateRun``);
- :mod:`~ct_assets.pipeline.reproduce`: a registered version trained again from what it
  records.
"""
