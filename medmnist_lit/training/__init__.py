"""One training run.

Fit and test a model, score checkpoints, predict, find a learning rate.
"""
