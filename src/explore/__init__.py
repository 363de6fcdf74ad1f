"""explore: Examining the Potential of Multimodality for Vision-Language Models.

Load, adapt, compress and evaluate InstructBLIP-style models where compute is scarce,
and measure honestly how much quality they keep.
"""

import logging

__version__ = "0.1.0"

# torchao (the int8 backend) logs harmless notices on every transformers model import; keep stderr
# for what the user needs to read.
for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)
