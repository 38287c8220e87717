r"""Untrusted text made safe to show: every name and string taken from a model is hostile until shown.

A tensor name can carry terminal escape sequences (ESC ] 52 writes the user's clipboard, ESC ] 0
sets the window title, CSI moves the cursor or hides text), C1 controls (U+009B is a one-byte
CSI on some terminals), NUL, or bidirectional overrides (U+202E makes ``evil\u202etxt.onnx`` read
backwards). ``visible`` writes each such character as a visible escape (``\x1b``, ``\u202e``)
instead: the terminal or browser then shows it and cannot act on it.
"""

from __future__ import annotations


def visible(text: str, keep: str = "") -> str:
    r"""``text`` with every non-printable character written as a visible escape.

    Non-printable is Python's definition (``str.isprintable``): control characters (C0, DEL, C1),
    format characters (bidi embeddings, overrides and isolates U+202A-U+202E, U+2066-U+2069, zero
    width joiners, ...), line and paragraph separators, surrogates, private-use and unassigned
    code points, and spaces other than U+0020. Characters in ``keep`` (e.g. ``"\n"`` for a
    multi-line block) are left as they are.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in keep else ascii(ch)[1:-1] for ch in text)


def terminal_line(text: str) -> str:
    """``text`` as one printable terminal line: newlines become spaces, everything else is ``visible``."""
    return visible(" ".join(text.strip().split("\n")))
