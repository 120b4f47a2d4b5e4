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
from torch import Tensor, nn
from torch.amp import GradScaler
from torch.optim import Optimizer

from samscale.optim.bn import freeze_bn_stats, release_bn_stats

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
    driven by ``sam_update`` (which also keeps BatchNorm statistics out of the perturbed pass). Mixed precision:
    pass the ``torch.amp.GradScaler`` to ``first_step`` and ``second_step`` (or to ``sam_update``); ε is then taken
    from the unscaled gradient and an inf/NaN in either pass skips the update with the weights restored.

    BatchNorm: the perturbed pass must not move running statistics (evaluation would otherwise use statistics of
    w + ε). With ``model=`` (the module whose parameters these are), SAM sees to it on every path: from
    ``first_step`` until the weights are restored (``second_step``, ``restore``, ``skip_update``, or the end of
    ``step(closure)``) the model's BatchNorm layers normalize with batch statistics but write no running statistic
    (``freeze_bn_stats``), so a framework that calls ``step(closure)`` (PyTorch Lightning) or a hand-written loop
    needs no other code. Without ``model`` that is the caller's job: run the perturbed forward pass inside
    ``with frozen_bn_stats(model):``, or use ``sam_update``, which does it.
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
        *,
        model: nn.Module | None = None,
        **base_kwargs: Any,
    ) -> None:
        _check_base_optimizer(base_optimizer_cls, base_kwargs)
        if model is not None and not isinstance(model, nn.Module):
            raise ValueError(f"SAM's model must be the torch.nn.Module being trained (or None), got {model!r}")
        self.model = model
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
        self._skipped = False  # first_step found an inf/NaN under a GradScaler: second_step drops the update
        self._amp_holders: list[_GradHolder] = []  # keys of the scaler's records of this update's clean passes
        self._frozen_bn: list[nn.Module] = []  # BatchNorm layers frozen from first_step until the weights are restored
        self._restored = False  # restore() ended a perturbation: .grad may hold the SAM gradient for step()

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
    def first_step(
        self,
        zero_grad: bool = False,
        *,
        scaler: GradScaler | None = None,
    ) -> bool:
        """Save every parameter that has a gradient and move it to w + ε (the ascent step); see the class docstring.

        With a ``scaler`` (mixed precision) ``.grad`` holds scaled gradients: they are unscaled first, so ε comes
        from the true gradient. If they hold an inf or NaN the weights are not moved, the update is marked skipped
        (``second_step`` then discards it and backs the scale off) and False is returned; otherwise True. Given a
        ``model`` at construction, its BatchNorm running statistics are frozen from here until the weights are
        restored (also for a skipped update, whose second pass must not count either).
        """
        if self._perturbed is not None or self._skipped:
            raise RuntimeError("first_step() called twice: call restore() or second_step() before perturbing again")
        self._restored = False
        groups = [(g, [p for p in g["params"] if p.grad is not None]) for g in self.param_groups]
        groups = [(g, ps) for g, ps in groups if ps]
        if not groups:
            raise RuntimeError("first_step() found no gradients: call backward() on the clean loss first")
        amp = scaler is not None and scaler.is_enabled()
        if amp:
            self._unscale_(scaler, [p for _, ps in groups for p in ps])
        directions = [_ascent_directions(ps, g["adaptive"], g["eta"]) for g, ps in groups]
        norm = _global_norm([t_g for t_gs, _ in directions for t_g in t_gs]) if self.normalize or amp else None
        if amp:
            if not bool(torch.isfinite(norm)):
                self._skipped = True
                self._freeze_bn()
                if zero_grad:
                    self.zero_grad(set_to_none=True)
                return False
            if not self.normalize:
                norm = None
        all_params: list[Tensor] = []
        all_saved: list[Tensor] = []
        for (group, params), (_, t2_gs) in zip(groups, directions):
            scale = group["rho"] if norm is None else _ascent_scale(group["rho"], norm, self.norm_eps)
            perturbed = self._spare_buffers(params)
            _add_scaled_into(perturbed, params, t2_gs, scale)
            for p, w_plus_eps in zip(params, perturbed):  # swap storages: w is kept as it is, nothing copied
                all_saved.append(p.data)
                p.data = w_plus_eps
            all_params += params
        self._perturbed = (all_params, all_saved)
        _forget_autocast_casts()
        self._freeze_bn()
        if zero_grad:
            self.zero_grad(set_to_none=True)
        return True

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the weights ``first_step`` set aside (bit-exact; ε is never subtracted, so nothing drifts).

        ``first_step`` writes w + ε into a spare buffer and swaps it in as each parameter's data, keeping w's own
        storage aside, so restoring is a swap back: no copy either way. The spare buffer is reused every step.
        BatchNorm layers frozen by ``first_step`` (given a ``model``) track their statistics again.
        """
        if self._perturbed is None:
            raise RuntimeError("restore() needs a preceding first_step(): the weights are not perturbed")
        params, saved = self._perturbed
        for p, w in zip(params, saved):
            p.data = w
        self._perturbed = None
        _forget_autocast_casts()
        self._restored = True
        self._release_bn()

    def second_step(self, zero_grad: bool = False, *, scaler: GradScaler | None = None) -> None:
        """Restore w and let the base optimizer step with the gradient now in ``.grad`` (the SAM gradient).

        With a ``scaler``: the gradient is unscaled, the base step is skipped if it holds an inf or NaN (or if
        ``first_step`` already found one), and the scaler is updated, once per SAM update.
        """
        if self._skipped:
            self.skip_update(scaler)
            return
        self.restore()
        self.base_step(scaler)
        if zero_grad:
            self.zero_grad(set_to_none=True)

    def skip_update(self, scaler: GradScaler | None = None, *, zero_grad: bool = True) -> None:
        """Drop this update: weights restored if perturbed, gradients cleared, base optimizer state untouched, and
        the scaler (if any) told about the overflow so that it backs its scale off.

        ``zero_grad=False`` keeps ``.grad`` as it is, for a caller whose own scaler step must still see the
        overflowing gradient (a framework that calls ``scaler.step`` after the passes).
        """
        if self._perturbed is not None:
            self.restore()
        self._release_bn()
        self._skipped = self._restored = False
        if zero_grad:
            self.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            _record_overflow(scaler, self._amp_holders, self.param_groups[0]["params"][0].device)
            scaler.update()
        self._amp_holders.clear()
        self._opt_called = True

    def base_step(self, scaler: GradScaler | None = None) -> bool:
        """Run ``base_optimizer.step()`` on the current ``.grad`` at the current (unperturbed) weights.

        With a ``scaler``: the gradient is unscaled, the step is skipped if it holds an inf or NaN, and the scaler
        is updated. Returns whether the base optimizer stepped.
        """
        if self._perturbed is not None:
            raise RuntimeError("base_step() while the weights are perturbed: call restore() first")
        stepped = True
        if scaler is not None and scaler.is_enabled():
            scaler.unscale_(self.base_optimizer)
            grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
            stepped = not grads or bool(torch.isfinite(_global_norm(grads)))
            scaler.step(self.base_optimizer)  # skips by itself when unscale_ found an inf or NaN
            scaler.update()
            self._amp_holders.clear()
        else:
            self.base_optimizer.step()
        self._restored = False
        # torch's LR schedulers check this flag (set by a call to .step()) to warn about call order; the update
        # happened here, so a scheduler attached to this object must not warn.
        self._opt_called = True
        return stepped

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        """Full SAM update; ``closure`` computes the mini-batch loss and calls backward (called twice, grads zeroed).

        Returns the loss of the clean (first) call. Given a ``model`` at construction, the second (perturbed) call
        leaves its BatchNorm running statistics untouched; without one, that is the closure's business (wrap the
        perturbed call in ``frozen_bn_stats``, or use ``sam_update``, which does both passes correctly).

        Without a closure, ``step()`` finishes an update whose two passes the caller already ran, for frameworks that
        call ``optimizer.step()`` themselves (Hugging Face Trainer, Accelerate): after ``first_step`` and the
        perturbed backward it is ``second_step()``; after the weights were already restored (``restore()``) it is
        the base step on the SAM gradient in ``.grad``. Anywhere else it raises, rather than silently taking a plain
        base-optimizer step.
        """
        if closure is None:
            if self._perturbed is not None or self._skipped:
                self.second_step()
            elif self._restored:
                self.base_step()
            else:
                raise ValueError(
                    "SAM.step needs a closure that computes the loss and calls backward(), or, without one, a "
                    "preceding first_step() and backward pass at w + ε; got neither"
                )
            return None
        closure = torch.enable_grad()(closure)
        self.zero_grad(set_to_none=True)
        loss = closure()
        self.first_step(zero_grad=True)
        try:
            closure()
        except BaseException:
            self.restore()  # never leave the model at w + ε
            self._restored = False
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

    def _unscale_(self, scaler: GradScaler, params: list[Tensor]) -> None:
        """Unscale the clean gradients in place through the scaler, which records whether they overflowed.

        ``GradScaler.unscale_`` may run once per optimizer between updates, and SAM needs it once per clean pass
        plus once for the SAM gradient, so each clean pass is unscaled under its own small holder object; the
        scaler's ``update`` then sees every record of the step.
        """
        holder = _GradHolder(params)
        self._amp_holders.append(holder)
        scaler.unscale_(holder)

    def _freeze_bn(self) -> None:
        if self.model is not None:
            self._frozen_bn += freeze_bn_stats(self.model)

    def _release_bn(self) -> None:
        release_bn_stats(self._frozen_bn)
        self._frozen_bn = []

    def _spare_buffers(self, params: list[Tensor]) -> list[Tensor]:
        """The persistent buffers that hold w + ε while perturbed (allocated once, reused every step)."""
        buffers = []
        for p in params:
            state = self.state[p]
            buffer = state.get("spare")
            if (buffer is None or buffer.shape != p.shape or buffer.dtype != p.dtype or buffer.device != p.device
                    or buffer.stride() != p.stride()):
                buffer = torch.empty_like(p)
                state["spare"] = buffer
            buffers.append(buffer)
        return buffers


class _GradHolder:
    """Just enough of an optimizer (``param_groups``) for ``GradScaler.unscale_`` to unscale and record these grads."""

    def __init__(self, params: list[Tensor]):
        self.param_groups = [{"params": params}]


def _record_overflow(scaler: GradScaler, holders: list[_GradHolder], device: torch.device) -> None:
    """Make the scaler's next ``update`` back off, as for any overflowing step (also when only another process, or
    only the ascent norm, overflowed): it is shown one infinite gradient through its public ``unscale_``."""
    probe = torch.zeros(1, device=device)
    probe.grad = torch.full((1,), math.inf, device=device)
    holder = _GradHolder([probe])
    holders.append(holder)
    scaler.unscale_(holder)


def _forget_autocast_casts() -> None:
    """Drop autocast's cached low-precision copies of the weights after their data was swapped.

    Inside one ``torch.autocast`` region, autocast casts each float32 leaf weight once and reuses the copy for every
    later forward pass of the region, keyed by the parameter, not by its data. A SAM update run entirely inside one
    region (``with torch.autocast(...): sam_update(...)``, or a framework's training step that wraps the whole
    update) would then take its perturbed pass at the cached w instead of w + ε, and silently be a plain gradient
    step. Clearing the cache whenever the weights move makes the next pass cast the weights it actually has.
    """
    torch.clear_autocast_cache()


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


def _ascent_scale(rho: float, norm: Tensor, norm_eps: float) -> float | Tensor:
    """ρ / (‖g‖ + eps): a Python float on the CPU (read without a device sync), a tensor elsewhere."""
    if norm.device.type == "cpu":
        return rho / (norm.item() + norm_eps)
    return rho / (norm + norm_eps)


def _add_scaled_into(out: list[Tensor], params: list[Tensor], tensors: list[Tensor], scale: float | Tensor) -> None:
    """out = params + scale · tensors: one pass per tensor on the CPU (the scale is read without a device sync)."""
    if isinstance(scale, Tensor):
        if scale.device.type != "cpu":
            torch._foreach_copy_(out, params)
            torch._foreach_add_(out, torch._foreach_mul(tensors, scale))
            return
        scale = scale.item()
    for o, p, t in zip(out, params, tensors):
        torch.add(p, t, alpha=scale, out=o)


def _global_norm(tensors: list[Tensor]) -> Tensor:
    """One L2 norm over all entries of all tensors, in the widest dtype among them."""
    norms = torch._foreach_norm(tensors)
    first = norms[0]
    if any(n.dtype != first.dtype or n.device != first.device for n in norms):
        dtype = first.dtype
        for n in norms[1:]:
            dtype = torch.promote_types(dtype, n.dtype)
        norms = [n.to(device=first.device, dtype=dtype) for n in norms]
    return torch.linalg.vector_norm(torch.stack(norms))


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
