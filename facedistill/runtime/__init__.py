"""Lean runtime: numpy + PIL + the chosen backend; never imports torch or facedistill.pipeline."""
