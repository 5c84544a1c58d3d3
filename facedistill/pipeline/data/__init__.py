"""Datasets: the embedded synthetic generator, the CelebA reader and the transforms."""
