"""What a stage trains: a :class:`StageTask` (model + loss), run by :func:`~m2cofs.training.engine.run_loop`."""

from __future__ import annotations

import torch
from torch import nn


class StageTask(nn.Module):
    """A stage's model + loss. Subclasses set ``trained`` (names of sub-modules to optimise)."""

    trained: tuple[str, ...] = ()

    def trained_modules(self) -> dict[str, nn.Module]:
        return {n: getattr(self, n) for n in self.trained}

    def trained_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.trained_modules().values() for p in m.parameters() if p.requires_grad]

    def param_groups(self) -> list[dict]:
        """The optimiser's parameter groups: one by default; a group may carry ``lr_scale``, the
        multiple of the loop's (scheduled) learning rate it trains at."""
        return [{"params": self.trained_parameters()}]

    def trained_state(self) -> dict[str, torch.Tensor]:
        return {f"{n}.{k}": v.detach().clone() for n, m in self.trained_modules().items() for k, v in m.state_dict().items()}

    def load_trained_state(self, state: dict[str, torch.Tensor]) -> None:
        for n, m in self.trained_modules().items():
            prefix = f"{n}."
            m.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    # hooks (optional)
    def before_optimizer_step(self) -> None:
        """Called after backward, before ``optimizer.step()`` (SI reads the gradients here)."""

    def after_optimizer_step(self) -> None:
        """Called after ``optimizer.step()``."""

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Additional tensors to checkpoint (e.g. SI accumulators)."""
        return {}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`extra_state`."""
