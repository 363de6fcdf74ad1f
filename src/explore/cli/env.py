"""Process-wide settings the ``explore`` command makes before any command runs.

They live here, in the entry point, because a library import must not change the process it is imported
into (environment variables, other packages' loggers); :func:`configure_process` is called first thing by
``explore`` (the console script) and ``python -m explore.cli``, before torch is imported.
"""

from __future__ import annotations

import logging
import os

# torchao (the int8 backend) logs harmless notices on every transformers model import, and diffusers
# one about torchao tensor types it does not need here; keep stderr for what the user needs to read.
QUIET_LOGGERS = ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer")


def configure_process() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it, and quiet :data:`QUIET_LOGGERS` to errors.

    OpenMP threads that spin while waiting are a disaster on a small shared CPU: with another busy
    process on a 2-core machine, generation with torch's default 2 spinning threads ran at 2.8
    examples/s against 43.9 with OMP_WAIT_POLICY=PASSIVE (measured side by side, same model and
    batch). It only takes effect if set before torch starts OpenMP, hence before any command imports
    torch; a user's own value wins.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
