"""explore: Examining the Potential of Multimodality for Vision-Language Models.

Load, adapt, compress and evaluate InstructBLIP-style models where compute is scarce,
and measure honestly how much quality they keep.

Importing explore changes nothing in the process (no environment variable, no logger level): the
``explore`` command sets those in :func:`explore.cli.env.configure_process`.
"""

__version__ = "0.1.0"
