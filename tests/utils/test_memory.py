"""Freed large blocks go back to the system where malloc is glibc's; elsewhere nothing changes."""

from __future__ import annotations

import platform
import sys

from medmnist_lit.utils.memory import return_large_blocks


def test_the_mmap_threshold_is_fixed_once_on_glibc() -> None:
    first = return_large_blocks()
    assert return_large_blocks() is first  # set once per process
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert first
