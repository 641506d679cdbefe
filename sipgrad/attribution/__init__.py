"""Attribution methods (captum) and the ``explain`` entry point."""

from sipgrad.attribution.explain import Explanation, explain, resolve_targets
from sipgrad.attribution.methods import METHODS, MethodOptions, attribute, saliency_map

__all__ = ["Explanation", "METHODS", "MethodOptions", "attribute", "explain", "resolve_targets", "saliency_map"]
