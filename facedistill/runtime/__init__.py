"""Lean runtime: numpy + PIL + the chosen backend; never imports torch or facedistill.pipeline.

Load an exported model and predict face attributes::

    from facedistill.runtime import Predictor

    predictor = Predictor("snet3.fp32.onnx")
    print(predictor.predict("face.jpg").positives())

See ``docs/runtime.md`` for embedding it in a face app.
"""

from facedistill.runtime.errors import DetectorError, ImageError, ModelError
from facedistill.runtime.images import ImageInput, load_image, load_rgb
from facedistill.runtime.metadata import MetadataError, ModelInfo, parse_metadata
from facedistill.runtime.predictor import Predictor
from facedistill.runtime.preprocess import Preprocess
from facedistill.runtime.results import FacePrediction, Prediction

__all__ = [
    "DetectorError",
    "FacePrediction",
    "ImageError",
    "ImageInput",
    "MetadataError",
    "ModelError",
    "ModelInfo",
    "Predictor",
    "Prediction",
    "Preprocess",
    "load_image",
    "load_rgb",
    "parse_metadata",
]
