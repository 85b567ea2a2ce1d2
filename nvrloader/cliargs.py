"""Argument types the commands share, so every command spells a frame size the same way."""
from __future__ import annotations

import argparse


def parse_resolution(text: str) -> tuple[int, int]:
    """'256x320' -> (256, 320): height first, as the papers write it."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution must look like 256x320 (HxW), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"resolution must be positive, got {text!r}")
    return h, w
