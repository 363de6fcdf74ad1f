"""The model layer: InstructBLIPs built from transformers' own classes, their inputs, and safe loading.

- ``presets.py``: named sizes (``tiny-t5``, ``tiny-llama``, ``shapes-small``).
- ``tokenizer.py``: the word-level tokenizer for from-scratch models.
- ``build.py``: preset → ``InstructBlipConfig`` → a deliberately initialised model and its processor.
- ``collate.py``: ``Example`` s → model inputs (labels for training, left padding for generation).
- ``generate.py``: greedy answers for a batch of examples.
- ``loading.py``: ``load_model`` / ``save_model`` (safetensors only, finite weights).
"""
