"""Cross-validation.

Folds trained one after another or together in one pass, and their summary.
"""
