"""The one tokeniser every text metric uses (lower-cased words and single punctuation marks)."""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def tokenize(text: str) -> list[str]:
    """Split ``text`` into lower-cased word and punctuation tokens.

    >>> tokenize("The cat, the HAT!")
    ['the', 'cat', ',', 'the', 'hat', '!']
    """
    return _TOKEN.findall(text.lower())
