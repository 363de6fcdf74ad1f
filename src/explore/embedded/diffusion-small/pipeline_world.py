"""The pipeline class of this folder, for DiffusionPipeline.from_pretrained(folder, trust_remote_code=True).

It needs the explore package (pip install explore); WorldDiffusionPipeline.from_pretrained(folder) loads the
folder without running this file.
"""

from explore.diffusion.pipeline import WorldDiffusionPipeline

__all__ = ["WorldDiffusionPipeline"]
