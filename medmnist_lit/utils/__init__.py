"""Shared helpers that know nothing of data, models or runs.

Atomic files, the console, figures, statistics, process lifetimes, config-file checks and the
weights-only checkpoint loader.
"""
