"""facedistill.export (built by a later issue)."""
