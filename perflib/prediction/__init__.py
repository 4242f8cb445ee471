"""Estimating generation time: features, cost models, pooling, conformal intervals, the
predictor, its evaluation and backtests, and the pure retraining rule."""
