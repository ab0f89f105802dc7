"""Splits and leakage.

Hold-out, k-fold, leave-one-out, grouped and predefined splits; exact and near-duplicate groups; the
leakage audit.
"""
