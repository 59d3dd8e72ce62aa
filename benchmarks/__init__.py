"""Measurements of the readers and the pipeline on the shared corpora."""
