"""Models: the zoo, preprocessing, and class names."""

from sipgrad.models.classes import ClassNames, imagenet_classes
from sipgrad.models.efficientnet_lite import EfficientNetLite0
from sipgrad.models.preprocessing import Geometry, Preprocessing
from sipgrad.models.registry import (
    DEFAULT_MODEL, MODELS, Classifier, conv_names, load_model, load_state_dict_file, weights_available_offline,
)

__all__ = [
    "Classifier", "ClassNames", "EfficientNetLite0", "Geometry", "Preprocessing", "MODELS", "DEFAULT_MODEL",
    "conv_names", "imagenet_classes", "load_model", "load_state_dict_file", "weights_available_offline",
]
