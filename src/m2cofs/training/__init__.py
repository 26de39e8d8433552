"""Training: the patch sampler, the generic stage loop (checkpoints, resume, DDP, logs) and the
stages of M²-CoFS — 0 autoencoders, I independent tasks, II cross-task weight adaptation,
III weight unification — plus :mod:`~m2cofs.training.pipeline`, which runs them in order.

Modules: ``pipeline`` (:class:`Trainer`, ``train``) · ``options`` (``TrainOptions``, stages,
time budgets) · ``run_folder`` (RUN/ refusals, ``--overwrite``, kill leftovers, run.json) ·
``inputs`` (the training cases) · ``results`` (``StageResults``, ``prefixed``, ``part``) ·
``seeds`` (every stream key and seed offset) · ``engine`` (``run_loop``, ``LoopSettings``) with
``task`` (``StageTask``), ``state`` (in-stage checkpoints), ``logs``, ``prefetch`` · ``patches`` ·
``distributed`` · ``stage0_autoencoder`` … ``stage3_unification``."""
