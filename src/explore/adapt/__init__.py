"""Recovery fine-tuning after compression: adapters (LoRA, DoRA, IA3, QLoRA), full tuning, distillation."""
