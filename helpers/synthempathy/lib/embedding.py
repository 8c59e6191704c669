"""The sentence embedder of the quality and diversity filters, with an on-disk cache shared by a run's stages.

`embedder(cfg, store)` is the one way a stage builds it from the config: the profile's `embedder` spec and
`embedder_prompt_name` on `device`, its vectors cached under the run's cache folder.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .models import pick_device, resolve

log = logging.getLogger(__name__)


def embedder(cfg, store) -> Embedder:
    """The profile's embedder, caching its vectors in the run's cache folder."""
    return Embedder(cfg.embedder, store.cache_dir, cfg.embedder_prompt_name, cfg.device)


def load_embedder(spec: str, device: str = "auto"):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve(spec), device=pick_device(device))


class Embedder:
    """A sentence-transformers embedder whose vectors are cached on disk by text hash.

    The cache (one .npy of vectors and a .json of text hashes per embedder spec and prompt) is shared by
    every stage of a run, so notebook 03 reuses what notebook 02 embedded, and a rerun embeds nothing again.
    """

    def __init__(self, spec: str, cache_dir: str | os.PathLike | None = None, prompt_name: str | None = None,
                 device: str = "auto", batch_size: int = 64):
        from ..chain.store import hash_obj

        self.spec, self.prompt_name, self.device, self.batch_size = spec, prompt_name, device, batch_size
        self._model = None
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._stem = f"{hash_obj([spec, prompt_name])[:16]}"
        self._vectors: dict[str, object] = {}
        if self.cache_dir:
            self._load_cache()

    @property
    def model(self):
        if self._model is None:
            self._model = load_embedder(self.spec, self.device)
        return self._model

    def _paths(self) -> tuple[Path, Path]:
        return self.cache_dir / f"{self._stem}.npy", self.cache_dir / f"{self._stem}.keys.json"

    def _load_cache(self) -> None:
        import json

        import numpy as np

        vec_path, key_path = self._paths()
        if not (vec_path.exists() and key_path.exists()):
            return
        try:
            keys, vecs = json.loads(key_path.read_text()), np.load(vec_path)
            if len(keys) != len(vecs):
                raise ValueError(f"{len(keys)} keys for {len(vecs)} vectors")
        except (ValueError, OSError, EOFError) as e:
            # only a cache: what it held is recomputed, nothing is lost
            log.warning("embedding cache %s is unreadable (%s): starting it over", vec_path, e)
            return
        self._vectors = dict(zip(keys, vecs))

    def _save_cache(self) -> None:
        import numpy as np

        from ..chain.store import write_json, write_npy

        vec_path, key_path = self._paths()
        keys = list(self._vectors)
        write_npy(vec_path, np.stack([self._vectors[k] for k in keys]))
        write_json(key_path, keys)

    @staticmethod
    def key(text: str) -> str:
        import hashlib

        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def encode(self, texts: list[str]):
        """Unit-norm float32 vectors, one row per text."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.model.get_embedding_dimension()), dtype=np.float32)
        keys = [self.key(t) for t in texts]
        missing = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in self._vectors))
        if missing:
            kw = {"prompt_name": self.prompt_name} if self.prompt_name else {}
            vecs = self.model.encode(missing, batch_size=self.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False, **kw)
            self._vectors.update(zip((self.key(t) for t in missing), vecs.astype(np.float32)))
            if self.cache_dir:
                self._save_cache()
        return np.stack([self._vectors[k] for k in keys])
