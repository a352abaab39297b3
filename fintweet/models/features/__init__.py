"""Model text → numbers, written here rather than borrowed from scikit-learn so the fitted state
is nothing but term lists and idf arrays (JSON + ``.npz``, no pickle), and so the worker's hot
path is one regex pass per tweet and a C-level dict lookup per feature.

Every vectorizer takes *token lists*: a model tokenizes its batch of model texts once
(:func:`fintweet.core.text.tokenize`) and hands the same lists to each of its feature blocks,
and the ensemble hands them to each member. One module per kind of feature:

- :mod:`.sparse`: batch CSR assembly and idf, shared by the vectorizers
- :mod:`.ngrams`: word and character n-gram bags (TF-IDF or binary)
- :mod:`.subwords`: per-token character n-grams (fastText-style), foldable at serving time
- :mod:`.sequences`: token ids for the CNN

All three vectorizers follow one pattern (:class:`.vocabulary.TermVocabulary`): ``fit(token
lists)`` → ``transform(token lists)``, ``state()`` → ``from_state(meta, arrays)``.
"""

from fintweet.models.features.ngrams import NgramConfig, NgramVectorizer
from fintweet.models.features.sequences import SequenceConfig, TokenIndexer
from fintweet.models.features.subwords import SubwordConfig, SubwordVectorizer
from fintweet.models.features.vocabulary import Tokens

__all__ = [
    "NgramConfig",
    "NgramVectorizer",
    "SequenceConfig",
    "SubwordConfig",
    "SubwordVectorizer",
    "TokenIndexer",
    "Tokens",
]
