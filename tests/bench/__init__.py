"""Tests of facedistill.bench."""
