"""The web app, ``explore serve``: a Gradio page over what the command line does.

Four tabs, each a thin page over the functions of the layers below (nothing is re-implemented here):

- **Ask** (:mod:`.ask`): an uploaded image or a world scene, a question or a caption, answered by the
  original model and a compressed one side by side, with latency;
- **Judge** (:mod:`.judge`): a query and two answers judged by the likelihood judge and by the generative
  judge with VL-RewardBench's official prompt;
- **Generate** (:mod:`.generate`): prompt → images, the layout used, the detector's objects drawn over each
  image, and the VLM's answers to the prompt's TIFA-style questions;
- **Sweep** (:mod:`.sweep`): a sweep folder's table, Pareto plots and answer; a point can be loaded into Ask.

Models load once and stay in a :class:`~explore.serve.models.ModelCache`; uploads go through
:mod:`explore.data.images` (decompression bombs and non-images refused with a message); :mod:`.app` builds
the page and launches it. This layer sits above the sweep, beside the CLI.
"""
