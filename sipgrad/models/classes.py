"""ImageNet class names and resolving what a user means by "the target class"."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from sipgrad.errors import SipgradError


@dataclass(frozen=True)
class ClassNames:
    """An ordered list of class names with case-insensitive lookup by name or wnid."""

    names: tuple[str, ...]
    wnids: tuple[str, ...] = ()
    _by_lower: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_lower: dict[str, int] = {}
        for index, name in enumerate(self.names):
            by_lower.setdefault(name.lower(), index)  # duplicates (e.g. "crane") resolve to the first
        for index, wnid in enumerate(self.wnids):
            by_lower.setdefault(wnid.lower(), index)
        object.__setattr__(self, "_by_lower", by_lower)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> str:
        return self.names[index]

    def index(self, query: str | int) -> int:
        """Class index for an index, a digit string, a class name or a wnid (case-insensitive)."""
        if isinstance(query, int) or (isinstance(query, str) and query.strip().isdigit()):
            value = int(query)
            if not 0 <= value < len(self.names):
                raise SipgradError(f"class index {value} is out of range (0..{len(self.names) - 1})")
            return value
        key = query.strip().lower()
        if key in self._by_lower:
            return self._by_lower[key]
        close = difflib.get_close_matches(key, list(self._by_lower), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(self.names[self._by_lower[c]]) for c in close)}?" if close else ""
        raise SipgradError(f"unknown class name {query!r}{hint}")

    @classmethod
    def generic(cls, count: int) -> "ClassNames":
        """Names "class 0" ... for models whose classes have no names."""
        return cls(tuple(f"class {i}" for i in range(count)))


@lru_cache(maxsize=1)
def imagenet_classes() -> ClassNames:
    """The 1000 ImageNet-1k classes in the standard order, with their WordNet ids."""
    text = resources.files("sipgrad").joinpath("data/imagenet_classes.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines()[1:] if line]
    return ClassNames(names=tuple(r[2] for r in rows), wnids=tuple(r[1] for r in rows))
