"""The one tokeniser every text metric uses: words, single punctuation marks and symbols, and one
token per character in scripts written without spaces (Chinese, Japanese, Thai, ...).

Before matching, the text is NFKC-normalised and case-folded (Unicode's caseless matching), so
the same words in another normalisation form or case are the same tokens: a generator whose
detokeniser writes NFD ("cafe" + U+0301) used to score half the rare-n-gram recall of the same
text in NFC, a false early-collapse signal. Invisible format characters (Unicode's
default-ignorable code points: soft hyphens, bidi marks, variation selectors, BOMs) are
dropped, and a zero-width space separates words. Combining marks (accents, Indic vowel signs)
and zero-width joiners stay inside their word; a flag (two regional indicators) is one token.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata

# scripts written without spaces between words: each character (with its combining marks) is
# one token, so that n-grams of characters carry the distribution a word tokeniser cannot see
# (a whole Chinese clause used to be one "word", and every text metric was blind to it)
_NO_SPACE = (
    "\u0e00-\u0e7f"  # Thai
    "\u0e80-\u0eff"  # Lao
    "\u0f00-\u0fff"  # Tibetan
    "\u1000-\u109f"  # Myanmar
    "\u1780-\u17ff"  # Khmer
    "\u3005\u3007"  # ideographic iteration mark and zero
    "\u3040-\u30ff"  # Hiragana, Katakana (with the prolonged sound mark)
    "\u31f0-\u31ff"  # Katakana phonetic extensions
    "\u3400-\u4dbf"  # CJK extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\U00020000-\U0003134f"  # CJK extensions B-G
)
_JOINERS = "\u200c\u200d"  # zero-width non-joiner / joiner
# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt), less the joiners above:
# invisible format characters (soft hyphen, bidi marks, variation selectors, BOM, tags). Each
# was a token of its own that split its word ("co\u00adoperation" -> co, \u00ad, operation): a
# generation equal to the reference but for soft hyphens read rare_ngram_recall 0.0 (an audit).
# They are dropped, as Unicode's NFKC_Casefold drops them; the zero-width space separates words.
_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200B),
    (0x200E, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
_DROP = {cp: None for lo, hi in _IGNORABLE for cp in range(lo, hi + 1)} | {0x200B: " "}
_FLAGS = "\U0001f1e6-\U0001f1ff"  # regional indicators: a flag is a pair of them
_EMOJI_MODIFIERS = "\U0001f3fb-\U0001f3ff"  # skin tones


@functools.lru_cache(maxsize=1)
def _pattern() -> re.Pattern[str]:
    """The token pattern; its combining-mark class is built once from ``unicodedata`` (every
    code point of category M), so it follows the Python's Unicode version."""
    marks: list[str] = []
    start = prev = -2
    for cp in range(sys.maxunicode + 1):
        if unicodedata.category(chr(cp))[0] == "M":
            if cp != prev + 1:
                if start >= 0:
                    marks.append(_span(start, prev))
                start = cp
            prev = cp
    if start >= 0:
        marks.append(_span(start, prev))
    mark = "".join(marks) + _JOINERS
    word = rf"[^\W{_NO_SPACE}]"  # a word character outside the scripts without spaces
    return re.compile(
        rf"[{_FLAGS}]{{2}}"  # a flag: two regional indicators are one token
        rf"|[{_NO_SPACE}][{mark}]*"  # one character of a script without spaces
        rf"|{word}(?:{word}|[{mark}])*"  # a word, its combining marks and joiners inside it
        rf"|[^\w\s{mark}](?:\u200d[^\w\s]|[{mark}{_EMOJI_MODIFIERS}])*"  # punctuation, a symbol, an emoji sequence
        rf"|[{mark}]+"  # combining marks with nothing to combine with
    )


def _span(a: int, b: int) -> str:
    return re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"


def normalize(text: str) -> str:
    """NFKC, case-folded, NFKC again (case folding can leave a string unnormalised), without
    default-ignorable format characters (a zero-width space becomes a space)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold()).translate(_DROP)


def tokenize(text: str) -> list[str]:
    """Split ``text`` into case-folded word, punctuation and symbol tokens.

    >>> tokenize("The cat, the HAT!")
    ['the', 'cat', ',', 'the', 'hat', '!']
    >>> tokenize("Straße ist café") == tokenize("STRASSE IST CAFE\\u0301")
    True
    >>> tokenize("东京是日本的首都。")
    ['东', '京', '是', '日', '本', '的', '首', '都', '。']
    """
    if text.isascii():  # the common case, exactly the same tokens: 5x faster
        return _ASCII.findall(text.lower())
    return _pattern().findall(normalize(text))


_ASCII = re.compile(r"\w+|[^\w\s]")
