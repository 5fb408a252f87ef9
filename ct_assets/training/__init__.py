"""Pure training functions: LightGBM models, metrics and the promotion gate."""
