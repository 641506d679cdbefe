"""Ctrl-C in the middle of a command, for the tests of what it keeps."""

from collections.abc import Callable


def interrupted_on_call(real: Callable, number: int) -> Callable:
    """``real``, except that its ``number``-th call raises KeyboardInterrupt (as Ctrl-C would) instead of running."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == number:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return wrapper
