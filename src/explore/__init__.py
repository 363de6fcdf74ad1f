"""explore: Examining the Potential of Multimodality for Vision-Language Models.

Load, adapt, compress and evaluate InstructBLIP-style models where compute is scarce,
and measure honestly how much quality they keep.
"""

__version__ = "0.1.0"
