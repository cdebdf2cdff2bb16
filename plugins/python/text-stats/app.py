"""text-stats in Python: the `stats` and `top_words` actions of plugins/text-stats, with
the same definitions (a word is a run of letters and digits, joined by an apostrophe or
hyphen between two of them, or by `.`/`,` between two ASCII digits), so both agents
answer alike. A pure agent: it needs no grant.
"""

import math
from dataclasses import dataclass
from typing import List

from corral import Agent

agent = Agent("text-stats-py", "0.1.0", "Measures and ranks text (the Python example).")

STOPWORDS = frozenset("""a about after all also am an and any are as at be because been before
being but by can could did do does for from had has have he her here him his how i if in
into is it its it's just me more my no not of on or our out over she so some than that the
their them then there these they this those to too up us very was we were what when where
which while who why will with would you your""".split())

TERMINATORS = "!?…"


def words(text: str) -> List[str]:
    found, start = [], None
    for i, c in enumerate(text):
        after = text[i + 1] if i + 1 < len(text) else ""
        joins = start is not None and (
            (c in "'’-" and after.isalnum())
            or (c in ".," and text[i - 1].isdigit() and text[i - 1].isascii() and after.isdigit() and after.isascii())
        )
        if c.isalnum() or joins:
            if start is None:
                start = i
        elif start is not None:
            found.append(text[start:i])
            start = None
    if start is not None:
        found.append(text[start:])
    return found


def sentences(text: str) -> int:
    count, has_word = 0, False
    for i, c in enumerate(text):
        decimal = c == "." and 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit() \
            and text[i - 1].isascii() and text[i + 1].isascii()
        if c in TERMINATORS or (c == "." and not decimal):
            count += has_word
            has_word = False
        elif c.isalnum():
            has_word = True
    return count + has_word


def lines(text: str) -> int:
    if not text:
        return 0
    return text.count("\n") + (0 if text.endswith("\n") else 1)


@dataclass
class Text:
    text: str


@dataclass
class Stats:
    chars: int
    bytes: int
    words: int
    lines: int
    sentences: int
    average_word_length: float


@agent.action(description="Count characters, bytes, words, lines and sentences")
def stats(input: Text) -> Stats:
    found = words(input.text)
    letters = sum(len(w) for w in found)
    average = math.floor(letters / len(found) * 100 + 0.5) / 100 if found else 0.0
    return Stats(
        chars=len(input.text),
        bytes=len(input.text.encode()),
        words=len(found),
        lines=lines(input.text),
        sentences=sentences(input.text),
        average_word_length=average,
    )


@dataclass
class TopWords:
    text: str
    limit: int = 10
    ignore_stopwords: bool = True


@agent.action(description="List the most frequent words")
def top_words(input: TopWords) -> dict:
    counts: dict = {}
    for word in words(input.text):
        word = word.lower().replace("’", "'")
        if input.ignore_stopwords and word in STOPWORDS:
            continue
        counts[word] = counts.get(word, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {"words": [{"word": w, "count": n} for w, n in ranked[: max(input.limit, 0)]]}


Handler = agent.handler()  # the component's export: componentize-py looks for `Handler`
