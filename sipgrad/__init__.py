"""sipgrad: explain what CNN image classifiers look at, sharper and more trustworthy.

Public API:
    load_model(name, weights=None, pretrained=True)  -> Classifier
    explain(model, images, target=None, method="grad", sip=None, ...) -> Explanation
    SIP(model, "topq:0.25")                            context manager filtering internal gradients
    SIPConfig                                           all SIP settings as one object

Subpackages:
    sipgrad.analysis    SVD/PCA of the internal gradients, plain or under SIP
    sipgrad.evaluation  bounding-box metrics, data sets, the resumable evaluator
    sipgrad.engines     forward-mode gradients and hypergradients through unrolled SGD
"""

from sipgrad.attribution import METHODS, Explanation, MethodOptions, explain
from sipgrad.errors import ImageLoadError, SipgradError, WeightsUnavailableError
from sipgrad.hooks import SIP, SIPConfig
from sipgrad.models import MODELS, Classifier, Preprocessing, imagenet_classes, load_model

__version__ = "0.1.0"

__all__ = [
    "Classifier", "Explanation", "ImageLoadError", "METHODS", "MODELS", "MethodOptions", "Preprocessing", "SIP",
    "SIPConfig", "SipgradError", "WeightsUnavailableError", "explain", "imagenet_classes", "load_model",
    "__version__",
]
