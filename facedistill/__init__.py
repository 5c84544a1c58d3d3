"""facedistill: compress face-attribute CNNs and ship them to devices."""

__version__ = "0.1.0"
