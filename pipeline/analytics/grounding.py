"""Grounding check: the names, numbers and product-like terms of a generated text that its sources do not have.

A small generator invents: products, plans, amounts, dates that no message mentions. `ungrounded_terms(text,
sources)` lists the terms of `text` that look like such claims and appear nowhere in `sources` (the window's
messages and the facts joined to them, as the prompt showed them):

- numbers: `3`, `12.5`, `40%`, `2024-05-01` (as written; `1,000` and `1000` are the same);
- names: capitalised words (`Business`, `Acme`, `SSO`), words with a capital or digit inside (`iPhone`,
  `X200`, `v2`). A capitalised word that starts a sentence counts only when it is not a common English word
  (`The`, `Customers`, `Many` ...).

A term is grounded when its lowercase form (or the same word without a plural or possessive `s`) is one of
the sources' words. Deliberately simple and deterministic: it cannot tell a true paraphrase from a false one,
but every name or number it flags was truly not in what the model was shown. Pure, no model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_NUMBER = re.compile(r"\d+(?:[.,:/\-]\d+)*%?")
_WORD = re.compile(r"[^\W\d_][\w'’\-]*|\d+(?:[.,:/\-]\d+)*%?[^\W\d_]*\w*")
_SENTENCE_END = re.compile(r"[.!?:;\n]\s*$")

# Words a summary may start a sentence with that name nothing (lowercase).
COMMON_WORDS = frozenset(
    """
    a about after all also although an and another any are as at because before both but buyers by can client
    clients common customer customers customers' each even every few for from had has have he her here his how
    however i if in is issue issues it its main majority many members message messages most multiple no none not
    of on one only or other others overall people please problem problems several she shoppers since so some
    subscribers such that the their them there these they this those though three to two user users users' was
    we were what when where which while who why with without you your
    """.split()  # noqa: SIM905  a list of words reads better as words
)


def normalise_number(token: str) -> str:
    return token.replace(",", "")


def source_words(sources: Iterable[str]) -> set[str]:
    """The lowercase words and numbers of `sources` (numbers without thousands commas)."""
    words: set[str] = set()
    for text in sources:
        for m in _WORD.finditer(text):
            token = m.group(0).strip("'’-")
            words.add(token.lower())
            for part in re.split(r"[\-/]", token):
                if part:
                    words.add(part.lower())
        for m in _NUMBER.finditer(text):
            words.add(normalise_number(m.group(0)).rstrip("%"))
            words.add(normalise_number(m.group(0)))
    return words


def facts_words(values: dict[str, Any]) -> list[str]:
    """The text of a facts object (its keys and scalar values, nested ones too), for `source_words`."""
    out: list[str] = []
    stack: list[Any] = [values]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            out.extend(str(k) for k in v)
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif v is not None:
            out.append(str(v))
    return out


def candidate_terms(text: str) -> list[str]:
    """The terms of `text` that name something or state a number, in order, without repeats."""
    out: list[str] = []
    for m in _WORD.finditer(text):
        token = m.group(0).strip("'’-")
        if not token:
            continue
        starts_sentence = m.start() == 0 or bool(_SENTENCE_END.search(text[: m.start()]))
        if _is_claim(token, starts_sentence) and token not in out:
            out.append(token)
    return out


def _is_claim(token: str, starts_sentence: bool) -> bool:
    if any(c.isdigit() for c in token):
        return True
    if token == "I" or not any(c.isupper() for c in token):
        return False
    inner_capital = any(c.isupper() for c in token[1:])
    if starts_sentence and not inner_capital:
        return token.lower() not in COMMON_WORDS
    return True


def is_grounded(term: str, words: set[str]) -> bool:
    t = term.lower()
    if _NUMBER.fullmatch(term):
        n = normalise_number(term)
        return n in words or n.rstrip("%") in words
    variants = {t, t.removesuffix("'s"), t.removesuffix("’s"), t.removesuffix("s"), t.removesuffix("es")}
    if variants & words or t + "s" in words:
        return True
    parts = [p for p in re.split(r"[\-/]", t) if p]
    return len(parts) > 1 and all(p in words for p in parts)


def ungrounded_terms(text: str, sources: Iterable[str]) -> list[str]:
    """The names and numbers of `text` found in none of `sources`, in order of appearance."""
    words = source_words(sources)
    return [t for t in candidate_terms(text) if not is_grounded(t, words)]
