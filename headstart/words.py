"""Words for messages and names: counted nouns ("1 image", "3 images"), and names made
safe to print on a terminal or write to a UTF-8 file."""

from __future__ import annotations

import os


def count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 image' / '1,234 images'; `plural` for irregular nouns ('entry', 'entries')."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def not_images(left_out: dict[str, int]) -> str | None:
    """'left out 3 files that are not images: .txt 2, hidden 1' (most common kind first,
    then by name), or None when nothing was left out."""
    if not left_out:
        return None
    total = sum(left_out.values())
    kinds = ", ".join(f"{kind} {n:,}" for kind, n in sorted(
        left_out.items(), key=lambda item: (-item[1], item[0])))
    return (f"left out {count(total, 'file')} that {'is' if total == 1 else 'are'} not "
            f"{'an image' if total == 1 else 'images'}: {kinds}")


def shown(text: object) -> str:
    """`text` made safe to print on a terminal: control characters (ESC sequences that move
    the cursor, clear the screen or retitle the window, carriage returns, bidi overrides)
    and bytes that are not UTF-8 become visible escapes such as \\x1b, \\u202e, \\xff.

    Every name taken from a folder, a store or a head passes through it before printing.
    """
    text = str(text)
    if text.isprintable():
        return text
    out = []
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogate)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char.isprintable() or char == " ":
            out.append(char)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}")
    return "".join(out)


def printable_path(path: str) -> str:
    """`path` with bytes that are not UTF-8 written as \\xNN escapes (never a UnicodeError).

    Paths from the file system carry such bytes as surrogates (os.fsdecode); a CSV or
    JSON file holds the escaped form, which says which byte it was.
    """
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
