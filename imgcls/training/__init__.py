"""Training: the Lightning side of imgcls.

- ``lightning_module``: ``ImageClassifier``, the one LightningModule that trains any net of
  ``imgcls.models``;
- ``cli``: ``imgcls fit | validate | test | predict``, a LightningCLI over it and the data
  modules of ``imgcls.data``;
- ``callbacks``: what every run uses (best and last checkpoints, the epoch timer, the
  model-vs-data check, a resumable RNG state, test and predict files);
- ``checkpoint_io``: atomic checkpoint writes with digests, safe loading, the model rebuilt
  from a checkpoint alone;
- ``loggers``: the CSV logger that survives a resume, W&B that runs offline without a key.

Nothing here imports ``imgcls.export``, ``imgcls.insight`` or ``imgcls.tune``; they build on it.
"""
