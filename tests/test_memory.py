"""Handing freed heap back to the OS: on glibc it happens, elsewhere it is a quiet no-op."""

import platform

from sipgrad.memory import release_freed_memory


def test_release_freed_memory_runs_where_glibc_has_malloc_trim():
    released = release_freed_memory()
    assert released is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")


def test_release_freed_memory_calls_malloc_trim(monkeypatch):
    import sipgrad.memory as memory
    calls = []
    monkeypatch.setattr(memory, "_malloc_trim", lambda: (lambda pad: calls.append(pad) or 1))
    assert memory.release_freed_memory() is True and calls == [0]
