"""Experiment batches.

Specs of variants × seeds, the resumable runner and its workers, reports and figures.
"""
