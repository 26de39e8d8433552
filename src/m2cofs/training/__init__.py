"""Training: the patch sampler, the generic stage loop (checkpoints, resume, DDP, logs) and the
stages of M²-CoFS — 0 autoencoders, I independent tasks, II cross-task weight adaptation,
III weight unification — plus :mod:`~m2cofs.training.pipeline`, which runs them in order."""
