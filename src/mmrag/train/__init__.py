"""Triplet fine-tuning of the dual encoder (losses, miners, trainer, checkpoints).

Not implemented yet: tracked by the issue "Triplet fine-tuning of the dual encoder". Checkpoints it
writes load through :func:`mmrag.encoders.load_encoder` (see :meth:`OpenClipEncoder.save`).
"""
