"""SAM as a wrapper around any torch optimizer: ascend to w + ε, take the gradient there, restore w, let the base step.

One class covers the paper's three variants: normalized SAM (Foret et al. 2021, the default), unnormalized USAM
(``normalize=False``, the paper's theory) and adaptive ASAM (``adaptive=True``, Kwon et al. 2021).
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from numbers import Real
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

# Keys SAM keeps in every parameter group (shared with the base optimizer, so they must not collide with its keys).
_GROUP_KEYS = ("rho", "adaptive", "eta")
# SAM-wide settings, carried in state_dict under this key.
_STATE_KEY = "sam"


class SAM(Optimizer):
    """Sharpness-aware minimization around a base optimizer that shares SAM's parameter groups.

    One update on a mini-batch, given the clean gradient g in ``.grad`` (data loss only, weight decay is the base's):
    ``first_step`` saves w and moves to w + ε with one global norm over every parameter that has a gradient, across
    all groups::

        ε = ρ · T²g / (‖T g‖₂ + norm_eps)   normalize=True  (SAM; ASAM when adaptive)
        ε = ρ · T²g                        normalize=False (USAM)

    where T = 1, or under ``adaptive`` T = |w| + η elementwise on weight tensors (dim > 1) and T = 1 on 1-D tensors
    (biases, normalization scales and shifts), so that ASAM's scale invariance applies to the weights it is meant
    for and zero-initialized 1-D parameters still get perturbed. The caller then recomputes the gradient at w + ε and
    ``second_step`` copies w back bit-exactly and runs ``base_optimizer.step()``, which applies weight decay at the
    restored w. ``rho``, ``adaptive`` and ``eta`` may be set per parameter group; ``normalize`` and ``norm_eps``
    are SAM-wide (``norm_eps`` is not called ``eps`` so that ``eps=`` still reaches an Adam base). Every other
    keyword goes to ``base_optimizer_cls``. ``param_groups`` is the base optimizer's own list, so an LR scheduler
    on either object sets the same learning rates.

    Typical use: ``SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9, weight_decay=5e-4)``
    driven by ``sam_update`` (which also keeps BatchNorm statistics out of the perturbed pass).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer_cls: type[Optimizer],
        rho: float = 0.05,
        normalize: bool = True,
        adaptive: bool = False,
        eta: float = 0.0,
        norm_eps: float = 1e-12,
        **base_kwargs: Any,
    ) -> None:
        _check_base_optimizer(base_optimizer_cls, base_kwargs)
        self.normalize = _check_flag("normalize", normalize)
        self.norm_eps = _check_nonnegative("norm_eps", norm_eps)
        super().__init__(params, {"rho": rho, "adaptive": adaptive, "eta": eta})
        self.base_optimizer = base_optimizer_cls(self.param_groups, **base_kwargs)
        clash = sorted(set(self.base_optimizer.defaults) & set(_GROUP_KEYS))
        if clash:
            raise ValueError(
                f"{base_optimizer_cls.__name__} uses the parameter-group key(s) {clash} that SAM needs for its own "
                f"hyperparameters, so it cannot be wrapped; use a base optimizer without keys {list(_GROUP_KEYS)}"
            )
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self._perturbed: tuple[list[Tensor], list[Tensor]] | None = None

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to SAM and its base optimizer at once, filling SAM's and the base's defaults."""
        for key in _GROUP_KEYS:
            param_group.setdefault(key, self.defaults[key])
        _check_group(param_group)
        if hasattr(self, "base_optimizer"):
            self.base_optimizer.add_param_group(param_group)
        else:
            super().add_param_group(param_group)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Save every parameter that has a gradient and move it to w + ε (the ascent step); see the class docstring."""
        if self._perturbed is not None:
            raise RuntimeError("first_step() called twice: call restore() or second_step() before perturbing again")
        groups = [(g, [p for p in g["params"] if p.grad is not None]) for g in self.param_groups]
        groups = [(g, ps) for g, ps in groups if ps]
        if not groups:
            raise RuntimeError("first_step() found no gradients: call backward() on the clean loss first")
        directions = [_ascent_directions(ps, g["adaptive"], g["eta"]) for g, ps in groups]
        norm = _global_norm([t_g for t_gs, _ in directions for t_g in t_gs]) if self.normalize else None
        all_params: list[Tensor] = []
        all_saved: list[Tensor] = []
        for (group, params), (_, t2_gs) in zip(groups, directions):
            scale = group["rho"] if norm is None else group["rho"] / (norm + self.norm_eps)
            saved = [self._saved_copy_buffer(p) for p in params]
            torch._foreach_copy_(saved, params)
            _add_scaled_(params, t2_gs, scale)
            all_params += params
            all_saved += saved
        self._perturbed = (all_params, all_saved)
        if zero_grad:
            self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def restore(self) -> None:
        """Copy back the weights saved by ``first_step`` (bit-exact; ε is never subtracted, so nothing drifts)."""
        if self._perturbed is None:
            raise RuntimeError("restore() needs a preceding first_step(): the weights are not perturbed")
        params, saved = self._perturbed
        torch._foreach_copy_(params, saved)
        self._perturbed = None

    def second_step(self, zero_grad: bool = False) -> None:
        """Restore w and let the base optimizer step with the gradient now in ``.grad`` (the SAM gradient)."""
        self.restore()
        self.base_step()
        if zero_grad:
            self.zero_grad(set_to_none=True)

    def base_step(self) -> None:
        """Run ``base_optimizer.step()`` on the current ``.grad`` at the current (unperturbed) weights."""
        if self._perturbed is not None:
            raise RuntimeError("base_step() while the weights are perturbed: call restore() first")
        self.base_optimizer.step()
        # torch's LR schedulers check this flag (set by a call to .step()) to warn about call order; the update
        # happened here, so a scheduler attached to this object must not warn.
        self._opt_called = True

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """Full SAM update; ``closure`` computes the mini-batch loss and calls backward (called twice, grads zeroed).

        Returns the loss of the clean (first) call. BatchNorm statistics are the closure's business: wrap the
        perturbed call in ``frozen_bn_stats`` or use ``sam_update``, which does both passes correctly.
        """
        if closure is None:
            raise ValueError("SAM.step needs a closure that computes the loss and calls backward(); got None")
        closure = torch.enable_grad()(closure)
        self.zero_grad(set_to_none=True)
        loss = closure()
        self.first_step(zero_grad=True)
        try:
            closure()
        except BaseException:
            self.restore()  # never leave the model at w + ε
            raise
        self.second_step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state (momentum buffers, …), the shared groups' hyperparameters and SAM's settings."""
        state = self.base_optimizer.state_dict()
        state[_STATE_KEY] = {"normalize": self.normalize, "norm_eps": self.norm_eps}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``state_dict`` of this class (or of the bare base optimizer, keeping SAM's current settings)."""
        state_dict = dict(state_dict)
        settings = state_dict.pop(_STATE_KEY, {})
        normalize = _check_flag("normalize", settings.get("normalize", self.normalize))
        norm_eps = _check_nonnegative("norm_eps", settings.get("norm_eps", self.norm_eps))
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups
        for group in self.param_groups:
            for key in _GROUP_KEYS:
                group.setdefault(key, self.defaults[key])
            _check_group(group)
        self.normalize, self.norm_eps = normalize, norm_eps

    def _saved_copy_buffer(self, p: Tensor) -> Tensor:
        """The persistent buffer that holds p's unperturbed value (allocated once, reused every step)."""
        state = self.state[p]
        buffer = state.get("old_p")
        if buffer is None or buffer.shape != p.shape or buffer.dtype != p.dtype or buffer.device != p.device:
            buffer = torch.empty_like(p)
            state["old_p"] = buffer
        return buffer


def _ascent_directions(params: list[Tensor], adaptive: bool, eta: float) -> tuple[list[Tensor], list[Tensor]]:
    """(T g, T² g) for each parameter; T = |w| + η on weight tensors under ASAM, otherwise T = 1 (no copies)."""
    grads = [p.grad for p in params]
    for g in grads:
        if g.is_sparse:
            raise ValueError("SAM does not support sparse gradients; use dense embeddings (sparse=False)")
    if not adaptive:
        return grads, grads
    weights = [i for i, p in enumerate(params) if p.dim() > 1]
    t_gs, t2_gs = list(grads), list(grads)
    if weights:
        scales = torch._foreach_abs([params[i] for i in weights])
        torch._foreach_add_(scales, eta)
        scaled = torch._foreach_mul(scales, [grads[i] for i in weights])
        twice = torch._foreach_mul(scales, scaled)
        for i, t_g, t2_g in zip(weights, scaled, twice):
            t_gs[i], t2_gs[i] = t_g, t2_g
    return t_gs, t2_gs


def _add_scaled_(params: list[Tensor], tensors: list[Tensor], scale: float | Tensor) -> None:
    """params += scale · tensors; one fused pass when the scale is readable without a device sync (on the CPU)."""
    if isinstance(scale, Tensor):
        if scale.device.type != "cpu":
            torch._foreach_add_(params, torch._foreach_mul(tensors, scale))
            return
        scale = scale.item()
    torch._foreach_add_(params, tensors, alpha=scale)


def _global_norm(tensors: list[Tensor]) -> Tensor:
    """One L2 norm over all entries of all tensors, in the widest dtype among them."""
    norms = torch._foreach_norm(tensors)
    dtype = norms[0].dtype
    for n in norms[1:]:
        dtype = torch.promote_types(dtype, n.dtype)
    device = norms[0].device
    return torch.linalg.vector_norm(torch.stack([n.to(device=device, dtype=dtype) for n in norms]))


def _check_base_optimizer(base_cls: Any, base_kwargs: dict[str, Any]) -> None:
    """Reject a base that is not an optimizer class, and keyword arguments neither SAM nor the base accepts."""
    if not (isinstance(base_cls, type) and issubclass(base_cls, Optimizer)) or issubclass(base_cls, SAM):
        raise ValueError(
            f"base_optimizer_cls must be a torch.optim.Optimizer subclass other than SAM "
            f"(e.g. torch.optim.SGD), got {base_cls!r}"
        )
    signature = inspect.signature(base_cls.__init__)
    kinds = {p.kind for p in signature.parameters.values()}
    if inspect.Parameter.VAR_KEYWORD in kinds:
        return
    accepted = {
        name
        for name, p in signature.parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    } - {"self", "params"}
    unknown = sorted(set(base_kwargs) - accepted)
    if unknown:
        raise ValueError(
            f"unknown argument(s) {unknown}: SAM takes rho, normalize, adaptive, eta, norm_eps and passes the rest "
            f"to {base_cls.__name__}, which takes {sorted(accepted)}"
        )


def _check_group(group: dict[str, Any]) -> None:
    """Validate SAM's per-group hyperparameters, naming the bad value."""
    _check_nonnegative("rho", group["rho"])
    _check_flag("adaptive", group["adaptive"])
    _check_nonnegative("eta", group["eta"])


def _check_nonnegative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"SAM's {name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"SAM's {name} must be True or False, got {value!r}")
    return value
