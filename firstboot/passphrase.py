"""Passphrase rules and strength feedback (no dependency: length, character classes, patterns).

The minimum is a floor, not a score: a 12-character passphrase of three words is fine, and
the feedback says what would make a weak one stronger. ZFS itself refuses fewer than 8.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MIN_LENGTH = 12
# Tiny on purpose: the commonest bases of weak passphrases; the pattern checks do the rest.
_COMMON = ("password", "passwort", "motdepasse", "azerty", "qwerty", "letmein", "welcome",
           "admin", "anklume", "secret", "iloveyou", "dragon", "monkey", "123456", "abc123")
_SEQUENCES = ("abcdefghijklmnopqrstuvwxyz", "0123456789", "qwertyuiop", "azertyuiop", "asdfghjkl")


@dataclass(frozen=True)
class Strength:
    ok: bool  # acceptable at all
    rating: str  # "too short", "weak", "fair", "strong"
    advice: tuple[str, ...]


def _classes(p: str) -> int:
    return sum(bool(re.search(rx, p)) for rx in (r"[a-z]", r"[A-Z]", r"[0-9]", r"[^a-zA-Z0-9]"))


def _has_sequence(p: str, n: int = 4) -> bool:
    low = p.lower()
    for seq in _SEQUENCES:
        for i in range(len(seq) - n + 1):
            if seq[i:i + n] in low or seq[i:i + n][::-1] in low:
                return True
    return False


def assess(p: str) -> Strength:
    advice = []
    if len(p) < MIN_LENGTH:
        return Strength(False, "too short", (f"use at least {MIN_LENGTH} characters "
                                             f"(this one has {len(p)})",))
    low = p.lower()
    if any(c in low for c in _COMMON):
        advice.append("avoid common words such as 'password' or the product's name")
    if re.search(r"(.)\1\1", p):
        advice.append("avoid runs of one character")
    if _has_sequence(p):
        advice.append("avoid keyboard or alphabet sequences")
    if len(set(p)) < len(p) / 3:
        advice.append("use more different characters")
    classes = _classes(p)
    if classes < 2 and len(p) < 20:
        advice.append("mix letters with digits or symbols, or use more words")
    score = (len(p) >= 16) + (len(p) >= 24) + (classes >= 3) - len(advice)
    rating = "strong" if score >= 2 else "fair" if score >= 0 and not advice else "weak"
    return Strength(True, rating, tuple(advice))


def problems(p: str, confirm: str | None) -> list[str]:
    """Why this pair cannot be used (empty: usable). `confirm` None: not asked (import)."""
    out = []
    if confirm is not None and p != confirm:
        out.append("the two passphrases differ")
    s = assess(p)
    if not s.ok:
        out.extend(s.advice)
    if "\n" in p or "\r" in p:
        out.append("a passphrase cannot contain a line break (it could never be typed)")
    return out
