"""SIP calibration: per-channel statistics over a labelled data set, and their file format."""

from sipgrad.calibration.calibrate import calibrate
from sipgrad.calibration.dataset import labelled_images
from sipgrad.calibration.stats import LayerStatistics, SIPStatistics, layer_fingerprint
from sipgrad.calibration.welch import shapiro_pvalues, welch_greater_pvalues

__all__ = ["LayerStatistics", "SIPStatistics", "calibrate", "labelled_images", "layer_fingerprint",
           "shapiro_pvalues", "welch_greater_pvalues"]
