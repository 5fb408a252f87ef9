"""Monitoring figures for people: feedback aggregates, loop latency, bias, pipeline
health and the canary's comparison of arms. The retrain triggers' decisions live in
:mod:`ct_assets.triggers`."""
