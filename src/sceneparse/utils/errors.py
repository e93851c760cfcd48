"""Error messages: the one line of an exception that a user's error message quotes."""
from __future__ import annotations


def first_line(e: BaseException, with_type: bool = False) -> str:
    """The first line of ``str(e)`` (library messages often append details or C++ traces below it); the
    exception's type name when the message is empty. ``with_type``: ``"TypeName: first line"``."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else ""
    if with_type:
        return f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text or type(e).__name__
