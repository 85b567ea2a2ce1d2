"""Argument types the commands share, so every command spells a frame size the same way."""
from __future__ import annotations

import argparse
from typing import Callable


def parse_resolution(text: str) -> tuple[int, int]:
    """'256x320' -> (256, 320): height first, as the papers write it."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution must look like 256x320 (HxW), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"resolution must be positive, got {text!r}")
    return h, w


def comma_list(kind: type) -> Callable[[str], tuple]:
    """An argparse type: 'a,b,c' -> (kind(a), kind(b), kind(c)), at least one value."""
    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(v.strip()) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError("the list is empty")
        return values
    return parse
