"""Silencing the hub libraries' progress bars and advisory warnings around steps where they are noise."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_hub_libraries() -> Iterator[None]:
    """diffusers and transformers log errors only and show no progress bars inside the block.

    Used around the merged-pipeline export, where they announce loading seven components and warn
    that the text encoders received no LoRA weights (true: only the transformer is trained).
    """
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    saved = [(lib, lib.get_verbosity(), lib.is_progress_bar_enabled())
             for lib in (diffusers_logging, transformers_logging)]
    for lib, _, _ in saved:
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, verbosity, bars in saved:
            lib.set_verbosity(verbosity)
            if bars:
                lib.enable_progress_bar()
