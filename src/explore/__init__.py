"""explore: Examining the Potential of Multimodality for Vision-Language Models.

Load, adapt, compress and evaluate InstructBLIP-style models where compute is scarce,
and measure honestly how much quality they keep.
"""

import logging
import os

# OpenMP threads that spin while waiting are a disaster on a small shared CPU: with another busy
# process on a 2-core machine, generation with torch's default 2 spinning threads ran at 2.8
# examples/s against 43.9 with OMP_WAIT_POLICY=PASSIVE (measured side by side, same model and
# batch). It only takes effect if set before torch starts OpenMP, hence here; a user's own value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

# torchao (the int8 backend) logs harmless notices on every transformers model import, and diffusers
# one about torchao tensor types it does not need here; keep stderr for what the user needs to read.
for _name in ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer"):
    logging.getLogger(_name).setLevel(logging.ERROR)
