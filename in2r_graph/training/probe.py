"""Rectification probe: prototype fidelity and neighbour purity against the ground truth.

The probe runs after a co-training epoch, in eval mode and without
gradients, on a fixed sample of truly-noisy training pairs. It reads the
clean caption-to-image mapping, which the training step never sees, and its
numbers are only logged.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.pairs import to_device
from ..evaluation.diagnostics import prototype_fidelity
from ..rectify import synthesize_prototypes
from .trainer import bank_ready


def make_rectification_probe(clean_caption_to_image: np.ndarray, true_clean: np.ndarray, sample_size: int = 512, seed: int = 0):
    """Return a trainer hook ``(trainer, epoch) -> dict`` measuring rectification quality.

    For a truly-noisy pair ``i`` (caption ``i`` given with a wrong image):

    - image direction: the query is the given image; its true partner is the
      caption of that image that pair ``i``'s image originally owned, taken as
      the first caption of the image; fidelity compares the synthesised
      caption prototype with it, and with caption ``i`` (the given partner);
    - text direction: the query is caption ``i``; its true partner is its
      clean image; fidelity compares the image prototype with it, and with
      the given (wrong) image;
    - purity: the share of retrieved neighbours whose pair truly involves
      the query's image (image direction) or the query caption's true image
      (text direction).
    """
    clean_caption_to_image = np.asarray(clean_caption_to_image, dtype=np.int64)
    noisy = np.flatnonzero(~np.asarray(true_clean, dtype=bool))
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(noisy, size=min(sample_size, noisy.size), replace=False)) if noisy.size else noisy
    first_caption = np.full(clean_caption_to_image.max() + 1 if clean_caption_to_image.size else 0, -1, dtype=np.int64)
    for caption in range(clean_caption_to_image.size - 1, -1, -1):
        first_caption[clean_caption_to_image[caption]] = caption

    @torch.no_grad()
    def probe(trainer, epoch: int) -> dict[str, float]:
        if sample.size < 2 or not trainer.rectifying:
            return {}
        data = trainer.train_data
        rectify = trainer.config.rectify
        given_images = data.caption_to_image[sample]
        # The caption an image truly owns; images without a caption in the slice are skipped.
        true_captions = first_caption[np.minimum(given_images, first_caption.size - 1)]
        usable = (given_images < first_caption.size) & (true_captions >= 0)
        results: dict[str, float] = {}
        for name, net in zip(("A", "B"), trainer.networks):
            bank = trainer._search_bank(0 if name == "A" else 1)
            if not bank_ready(bank, rectify.k):
                continue
            net.eval()
            device = trainer.device
            bank_images, bank_texts, bank_ids = bank.valid()
            ids = torch.from_numpy(sample).to(device)
            options = dict(query_ids=ids, key_ids=bank_ids, backend=rectify.search_backend, graph=trainer.graph)
            image_queries = net.encode_images(to_device(data.images(sample), device))
            text_queries = net.encode_texts(to_device(data.texts(sample), device))

            if rectify.rectify_images and usable.sum() >= 2:
                text_prototypes, found = synthesize_prototypes(
                    image_queries, bank_images, bank_texts, net.text_refiner, rectify.k, **options
                )
                true_texts = net.encode_texts(to_device(data.texts(true_captions[usable]), device))
                scores = prototype_fidelity(text_prototypes[usable], true_texts, text_queries[usable])
                results[f"{name}/text_prototype_fidelity"] = scores["prototype_cosine"]
                results[f"{name}/text_given_fidelity"] = scores["given_cosine"]
                neighbour_pairs = bank_ids[found.positions].cpu().numpy()
                neighbour_true_images = clean_caption_to_image[np.clip(neighbour_pairs, 0, clean_caption_to_image.size - 1)]
                results[f"{name}/text_neighbour_purity"] = float((neighbour_true_images == given_images[:, None]).mean())

            if rectify.rectify_texts:
                image_prototypes, found = synthesize_prototypes(
                    text_queries, bank_texts, bank_images, net.image_refiner, rectify.k, **options
                )
                true_images = net.encode_images(to_device(data.image_inputs(clean_caption_to_image[sample]), device))
                scores = prototype_fidelity(image_prototypes, true_images, image_queries)
                results[f"{name}/image_prototype_fidelity"] = scores["prototype_cosine"]
                results[f"{name}/image_given_fidelity"] = scores["given_cosine"]
                neighbour_pairs = bank_ids[found.positions].cpu().numpy()
                neighbour_images = data.caption_to_image[np.clip(neighbour_pairs, 0, data.num_pairs - 1)]
                results[f"{name}/image_neighbour_purity"] = float(
                    (neighbour_images == clean_caption_to_image[sample][:, None]).mean()
                )
        return results

    return probe
