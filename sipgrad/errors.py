"""User-facing errors.

Every problem a user can cause (a bad path, an unknown class name, missing weights
offline, a statistics file made for another model) is raised as a ``SipgradError``
whose message is one self-contained line. The CLI prints exactly that line and exits
non-zero; library users can catch a single exception type.
"""


class SipgradError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class InterruptedAfterWriting(KeyboardInterrupt):
    """Ctrl-C after some results were already written (a JSON document, before its figure): ``written`` lists them,
    so that whoever reports the interruption can say what was kept."""

    def __init__(self, written: list) -> None:
        super().__init__()
        self.written = list(written)


class ImageLoadError(SipgradError):
    """An image file could not be read (empty, truncated, not an image, too large)."""


class WeightsUnavailableError(SipgradError):
    """Pretrained weights are neither cached nor downloadable."""


def renamed_centre(centre: bool, center: bool | None) -> bool:
    """The value of a ``centre`` parameter whose old spelling ``center`` still works, with a warning.

    sipgrad spells it ``centre`` everywhere (the metric too); ``center=`` is deprecated.
    """
    if center is None:
        return centre
    import warnings

    warnings.warn("the 'center' parameter is now spelled 'centre'", DeprecationWarning, stacklevel=3)
    return center
