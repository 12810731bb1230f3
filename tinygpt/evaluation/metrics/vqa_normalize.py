"""Answer normalisation of the official VQA evaluation (GT-Vision-Lab `vqaEval.py`), quirks kept.

Published VQAv2 / OK-VQA / VizWiz numbers are computed with this exact normalisation, so ours
must reproduce it character for character, including its accidents:

* Punctuation: each of the 21 characters in `PUNCT` is *deleted* when it touches a space in the
  original text ("red (dark)" -> "red dark") or when the text contains a digit-comma-digit
  anywhere ("well-known 1,000" -> "wellknown 1000": every listed character goes, hyphens too);
  otherwise it is *replaced by a space* ("t-shirt" -> "t shirt").  Both tests look at the input
  text, never at the partially processed one.  Apostrophes, colons, '*', '#', '&', '%', '$' ... are
  not in the list and survive.
* Digits: the official script is Python 2 and compiles its patterns without re.UNICODE, so `\\d`
  there is ASCII 0-9 only; full-width or Arabic-Indic digits are ordinary characters.
* Periods: the official regex `(?!<=\\d)(\\.)(?!\\d)` was meant as "a period not between digits",
  but `(?!<=\\d)` is a look-*ahead* for the text "<=digit", always true at a '.', so it means "a
  period not followed by a digit": "3.5" and ".5" keep theirs, "1." and "st." lose it.  The
  official call passes `re.UNICODE` as the positional `count` argument, so at most 32 periods
  are removed per answer.
* Words (after lower-casing, split on whitespace): number words zero..ten and "none" become
  digits, the articles a/an/the are dropped, then the contraction table is applied.  Some table
  keys contain capitals ("Im", "Ive") and so can never match a lower-cased word: "im" stays "im".

`VIZWIZ_CONTRACTIONS` is the table as the official VizWiz evaluation ships it: most apostrophes in
it are typographic (U+2019), so e.g. "dont" becomes "don’t" there, not "don't".
"""
from __future__ import annotations

import functools
import re

# One ASCII apostrophe ' per entry; spelled as in the official table.
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}


def _vizwiz_table() -> dict[str, str]:
    """The VizWiz copy of the table: apostrophes typographic except in these entries."""
    curly = lambda s: s.replace("'", "\u2019")  # noqa: E731
    straight_values = {"aint", "arent", "cant", "couldve", "couldnt", "weve", "wheres", "whove"}
    straight_keys = {"couldn'tve", "hadn'tve"}
    return {(k if k in straight_keys else curly(k)): (v if k in straight_values else curly(v))
            for k, v in CONTRACTIONS.items()}


VIZWIZ_CONTRACTIONS: dict[str, str] = _vizwiz_table()

NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@",
         "`", ",", "?", "!")
# The official patterns (see the module docstring), compiled as Python 2 compiles them without
# re.UNICODE: `\d` is [0-9] only, so full-width "３.５" or "１,０００" hold no digits there.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)", re.ASCII)
_DIGIT_COMMA = re.compile(r"(\d)(,)(\d)", re.ASCII)
_OFFICIAL_PERIOD_COUNT = int(re.UNICODE)  # == 32: the official code's accidental count argument


def clean_whitespace(text: str) -> str:
    """The only processing an answer always gets: newlines and tabs to spaces, then strip."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """Official punctuation rule: delete-or-space per character, then the period strip."""
    delete_all = _DIGIT_COMMA.search(text) is not None
    out = text
    for p in PUNCT:
        if delete_all or (p + " " in text) or (" " + p in text):
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=_OFFICIAL_PERIOD_COUNT)


def process_digit_article(text: str, contractions: dict[str, str] = CONTRACTIONS) -> str:
    """Lower-case; number words to digits; drop articles; expand contractions; single spaces."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(contractions.get(w, w) for w in words if w not in ARTICLES)


_TABLES = {"vqa": CONTRACTIONS, "vizwiz": VIZWIZ_CONTRACTIONS}


@functools.lru_cache(maxsize=1 << 18)  # VQAv2 val normalises ~2M answers, mostly repeats
def normalize_answer(text: str, table: str = "vqa") -> str:
    """Full official normalisation of one answer: whitespace, punctuation, digits/articles.

    `table` picks the contraction table: "vqa" (GT-Vision-Lab) or "vizwiz" (VizWiz's copy).
    """
    return process_digit_article(process_punctuation(clean_whitespace(text)), _TABLES[table])
