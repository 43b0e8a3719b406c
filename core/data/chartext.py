"""Character-level language modelling on a small public-domain English corpus shipped in-repo.

The corpus is every ``corpus/*.txt`` file next to this module, read as UTF-8 in sorted file-name
order, line endings normalised to ``\\n`` and files joined with a blank line. The vocabulary is the
sorted set of characters of the whole corpus (deterministic; token id = index in that string).

Split rules (no window, and no target character, crosses a split boundary):
  * the encoded text is cut contiguously by position: first 90% ``train``, next 5% ``val``,
    last 5% ``test``;
  * each part is cut into non-overlapping windows of ``T = 64`` characters: ``x[i]`` is the
    window, ``y[i]`` the same window shifted by one (the next characters); a trailing remainder
    shorter than ``T + 1`` characters is dropped;
  * windows stay in text order; ``seed`` changes nothing (the splits are fixed by position).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._util import check_seed, long_tensor
from .base import Dataset, DatasetError, DatasetInfo, DatasetSplits

SEQ_LEN = 64
FRACTIONS = (0.90, 0.05, 0.05)
CORPUS_DIR = Path(__file__).resolve().parent / "corpus"


@functools.lru_cache(maxsize=4)
def _read_corpus(directory: str) -> str:
    files = sorted(Path(directory).glob("*.txt"))
    if not files:
        raise DatasetError(f"chartext: no corpus/*.txt files found in {directory}")
    parts = [
        f.read_text(encoding="utf-8").replace("\r\n", "\n").replace("\r", "\n").strip("\n") for f in files
    ]
    return "\n\n".join(parts) + "\n"


class CharText(Dataset):
    """Character-level LM: input ``(64,)`` int64 tokens, targets ``(N, 64)`` next characters."""

    name = "chartext"

    def __init__(self, corpus_dir: str | Path | None = None, seq_len: int = SEQ_LEN) -> None:
        self.corpus_dir = Path(corpus_dir) if corpus_dir is not None else CORPUS_DIR
        if seq_len < 1:
            raise DatasetError(f"chartext: seq_len must be >= 1, got {seq_len}")
        self.seq_len = seq_len

    def text(self) -> str:
        """The whole corpus as one string (cached)."""
        return _read_corpus(str(self.corpus_dir))

    def vocab(self) -> str:
        """The sorted character vocabulary; token id ``i`` is the character ``vocab()[i]``."""
        return "".join(sorted(set(self.text())))

    def encode(self, s: str) -> np.ndarray:
        """Token ids (int64) of ``s``; raises :class:`DatasetError` on a character outside the vocabulary."""
        index = {c: i for i, c in enumerate(self.vocab())}
        try:
            return np.fromiter((index[c] for c in s), dtype=np.int64, count=len(s))
        except KeyError as exc:
            raise DatasetError(f"chartext: character {exc.args[0]!r} is not in the vocabulary") from exc

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The string for token ids ``ids`` (any 1-D integer sequence or tensor)."""
        vocab = self.vocab()
        return "".join(vocab[int(i)] for i in ids)

    def info(self) -> DatasetInfo:
        v = len(self.vocab())
        return DatasetInfo(
            name=self.name,
            task="language_model",
            input_shape=(self.seq_len,),
            input_kind="tokens",
            num_classes=v,
            vocab_size=v,
        )

    def _windows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = self.seq_len
        m = (len(ids) - 1) // t
        return ids[: m * t].reshape(m, t), ids[1 : m * t + 1].reshape(m, t)

    def load(self, seed: int = 0) -> DatasetSplits:
        """Contiguous 90/5/5 split by position into non-overlapping windows; ``seed`` is unused."""
        check_seed(seed)
        ids = self.encode(self.text())
        n = len(ids)
        cut1 = int(n * FRACTIONS[0])
        cut2 = int(n * (FRACTIONS[0] + FRACTIONS[1]))
        parts = {"train": ids[:cut1], "val": ids[cut1:cut2], "test": ids[cut2:]}
        windows = {k: self._windows(p) for k, p in parts.items()}
        for k, (x, _) in windows.items():
            if len(x) == 0:
                raise DatasetError(
                    f"chartext: corpus of {n} characters too small for a {k} window of {self.seq_len}"
                )
        return DatasetSplits(
            info=self.info(),
            x_train=long_tensor(windows["train"][0]),
            y_train=long_tensor(windows["train"][1]),
            x_val=long_tensor(windows["val"][0]),
            y_val=long_tensor(windows["val"][1]),
            x_test=long_tensor(windows["test"][0]),
            y_test=long_tensor(windows["test"][1]),
        )
