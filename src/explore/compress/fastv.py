"""FastV image-token pruning in the language model as a compression operator: drop ``ratio`` of the image
tokens after LM layer ``layer``, ranked by the attention they receive there (arXiv 2403.06764).

The setting is stored in ``config.json`` (``explore_fastv``) and applied by forward hooks
(:mod:`explore.models.fastv`). **A plain** ``InstructBlipForConditionalGeneration.from_pretrained`` **ignores
it** (transformers has no FastV) and runs the full model; :func:`explore.models.loading.load_model` reads the
field and installs the hooks again. Apply it last: other operators (depth, width) copy and renumber blocks,
and the hooks are tied to the blocks they were registered on.
"""

from __future__ import annotations

import copy

from transformers import InstructBlipForConditionalGeneration

from explore.models.fastv import CONFIG_FIELD, FastVSettings, check_settings, install_fastv

__all__ = ["prune_image_tokens"]


def prune_image_tokens(
    model: InstructBlipForConditionalGeneration, ratio: float, layer: int
) -> InstructBlipForConditionalGeneration:
    """A copy of ``model`` that drops ``ratio`` (in [0, 1)) of its image tokens after LM layer ``layer``
    (T5: encoder block, 0 … n - 1; LLaMA: decoder layer, 0 … n - 2). Raises ExploreError for settings that
    do not fit the model."""
    settings = FastVSettings(ratio=ratio, layer=layer)
    check_settings(model, settings)
    model = copy.deepcopy(model)
    setattr(model.config, CONFIG_FIELD, {"ratio": float(ratio), "layer": int(layer)})
    return install_fastv(model)
