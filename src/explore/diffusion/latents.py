"""Latent diffusion's training data: every image of the pre-rendered cache (:mod:`explore.diffusion.cache`) encoded
once by the frozen autoencoder, ``latents-<autoencoder hash>/latents.npy`` (N, C, h, w) float32 beside the images,
so the encoder leaves the training step (it was 30–45% of a step of configs/diffusion/latent.yaml; the encoder is
deterministic: the posterior's mean). Building writes chunks and records progress, so it resumes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from explore.diffusion.autoencoder import encode
from explore.diffusion.cache import TrainingCache, training_cache, training_data
from explore.diffusion.config import DataSection
from explore.runs import model_fingerprint, write_json

LATENT_CHUNK = 256  # images encoded per batch (and between progress records) of a latent cache


def build_latent_cache(cache: TrainingCache, folder: Path, vae, progress: bool = True) -> np.ndarray:
    """Encode every image of ``cache`` with ``vae`` into ``folder/latents.npy`` (scaled latents, as
    :func:`explore.diffusion.autoencoder.encode` gives them; resumes a partial build). Returns it memory-mapped."""
    meta = folder / "meta.json"
    done = int(json.loads(meta.read_text())["done"]) if meta.is_file() else 0
    folder.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        side = encode(vae, cache.batch(0, 1)[0]).shape[1:]
    latents = np.lib.format.open_memmap(folder / "latents.npy", mode="r+" if done else "w+", dtype=np.float32,
                                        shape=(cache.size, *side))  # fmt: skip
    while done < cache.size:
        n = min(LATENT_CHUNK, cache.size - done)
        with torch.no_grad():
            latents[done : done + n] = encode(vae, cache.batch(done, n)[0]).float().numpy()
        latents.flush()
        done += n
        write_json(folder / "meta.json", {"done": done, "size": cache.size})
        if progress and (done % (LATENT_CHUNK * 40) == 0 or done == cache.size):
            print(f"latent cache {folder}: {done}/{cache.size} images encoded", flush=True)
    return np.load(folder / "latents.npy", mmap_mode="r")


def latent_data(data: DataSection, vae, progress: bool = True):
    """``batch(start, size) -> (latents, prompts, layout maps)`` for latent diffusion: with ``data.cache_dir``
    the latents are encoded once into the cache (per autoencoder, by a hash of its weights), else each batch is
    rendered and encoded on the fly (the same latents either way, up to float rounding of the batch size)."""
    cache = training_cache(data, progress)
    if cache is None:
        next_batch = training_data(data, progress=progress)

        def encode_batch(start: int, size: int):
            images, prompts, layouts = next_batch(start, size)
            with torch.no_grad():
                return encode(vae, images), prompts, layouts

        return encode_batch
    folder = Path(data.cache_dir) / f"latents-{model_fingerprint(vae)}"
    latents = build_latent_cache(cache, folder, vae, progress=progress)

    def latent_batch(start: int, size: int):
        index = (np.arange(start, start + size) % cache.size).tolist()
        _, prompts, layouts = cache.batch(start, size)
        return torch.from_numpy(np.stack([latents[i] for i in index])), prompts, layouts

    return latent_batch
