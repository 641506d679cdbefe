"""sipgrad: explain what CNN image classifiers look at, sharper and more trustworthy.

Public API:
    load_model(name, weights=None, pretrained=True)  -> Classifier
    explain(model, images, target=None, method="grad", sip=None, ...) -> Explanation
    SIP(model, "topq:0.25")                            context manager filtering internal gradients
    SIPConfig                                           all SIP settings as one object

Subpackages (loaded on first use, so ``import sipgrad`` stays light; ``sipgrad.analysis``
works after a plain ``import sipgrad``):
    sipgrad.analysis    SVD/PCA of the internal gradients, plain or under SIP, and across examples
    sipgrad.evaluation  bounding-box metrics, data sets, the resumable evaluator
    sipgrad.engines     forward-mode gradients and hypergradients through unrolled SGD
    sipgrad.datasets    the small data sets the engines train on (digits, MNIST, CIFAR-10 files)
    sipgrad.calibration, sipgrad.io, sipgrad.render   SIP statistics, image I/O, figures
"""

import importlib

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

_SUBPACKAGES = frozenset({"analysis", "calibration", "datasets", "engines", "evaluation", "io", "render"})


def __getattr__(name: str):
    """Import a subpackage on first access (PEP 562): heavy ones (SciPy, the engines) load only when used."""
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBPACKAGES)
