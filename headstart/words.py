"""Counted nouns for messages: "1 image", "3 images"."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 image' / '1,234 images'; `plural` for irregular nouns ('entry', 'entries')."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
