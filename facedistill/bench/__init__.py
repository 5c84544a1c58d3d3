"""facedistill.bench (built by a later issue)."""
