"""Evaluation: the sets, the generation and judging harness, refusal metrics with intervals and paired comparisons,
the results table, calibration of the judge.

Not empty on purpose: DVC warns "is empty" for an empty file it hashes, and stages importing this package list it in
their deps."""
