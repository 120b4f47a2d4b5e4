"""The mean loss of a model over fixed batches, as a pure function of one flat parameter vector.

Everything in `samscale.hessian` evaluates models through this view: parameters are substituted with
`torch.func.functional_call`, so the module's own weights and buffers are never written to.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp

BN_MODES = ("eval", "train")
HVP_MODES = ("fwd_rev", "rev_fwd", "double_backward")

LossFn = Callable[[Tensor, Tensor], Tensor]
Batch = tuple[Tensor, Tensor]


def _is_pair(item: object) -> bool:
    return isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(t, Tensor) for t in item)


def as_batches(data: Batch | Iterable[Batch]) -> list[Batch]:
    """Materialize `data` — one `(x, y)` pair of tensors or an iterable of such pairs — as a list of batches."""
    batches = []
    for index, item in enumerate([data] if _is_pair(data) else data):
        if not _is_pair(item):
            raise ValueError(f"batch {index} must be an (x, y) pair of tensors, got {type(item).__name__}")
        x, y = item
        if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ValueError(
                f"batch {index} must hold x and y with the same non-zero leading size, "
                f"got x {tuple(x.shape)} and y {tuple(y.shape)}"
            )
        batches.append((x, y))
    if not batches:
        raise ValueError("no batches given: pass at least one (x, y) pair")
    return batches


def check_choice(name: str, value: str, valid: Sequence[str]) -> None:
    """Raise a ValueError naming `value` and the valid choices unless `value` is one of them."""
    if value not in valid:
        raise ValueError(f"{name} must be one of {list(valid)}, got {value!r}")


@contextlib.contextmanager
def evaluation_mode(model: nn.Module, bn_mode: str) -> Iterator[None]:
    """Put every module in eval mode, and BatchNorm in batch-statistics mode if `bn_mode == "train"`, then restore.

    In "train" mode BatchNorm normalizes with the batch statistics but its running statistics are not updated
    (track_running_stats is switched off for the duration); dropout and the like stay in eval mode.
    """
    check_choice("bn_mode", bn_mode, BN_MODES)
    modules = list(model.modules())
    saved = [(m, m.training, getattr(m, "track_running_stats", None)) for m in modules]
    try:
        for m in modules:
            m.training = False
            if bn_mode == "train" and isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.training = True
                m.track_running_stats = False
        yield
    finally:
        for m, training, tracking in saved:
            m.training = training
            if tracking is not None:
                m.track_running_stats = tracking


def forward_over_reverse(fn: Callable, params: dict[str, Tensor], tangent: dict[str, Tensor]) -> dict:
    """∇²fn(params)·tangent as the directional derivative of the gradient (torch.func.jvp of torch.func.grad)."""
    return jvp(grad(fn), (params,), (tangent,))[1]


def reverse_over_forward(fn: Callable, params: dict[str, Tensor], tangent: dict[str, Tensor]) -> dict:
    """∇²fn(params)·tangent as the gradient of the directional derivative (torch.func.grad of torch.func.jvp)."""
    return grad(lambda p: jvp(fn, (p,), (tangent,))[1])(params)


def is_zero_tensor_bug(error: RuntimeError) -> bool:
    """Whether `error` is torch's failure to apply forward-mode AD to some backward formulas (e.g. F.mse_loss with
    reduction="mean" raises "ZeroTensors are immutable"); reverse-over-forward computes the same product there."""
    return "ZeroTensors are immutable" in str(error)


def _select_parameters(model: nn.Module, params: Iterable[str | nn.Parameter] | None) -> list[str]:
    named = dict(model.named_parameters())
    if params is None:
        names = [name for name, p in named.items() if p.requires_grad]
    else:
        by_identity = {id(p): name for name, p in named.items()}
        names = []
        for item in params:
            if isinstance(item, str):
                if item not in named:
                    raise ValueError(f"unknown parameter {item!r}; the model has {sorted(named)}")
                names.append(item)
            elif isinstance(item, Tensor) and id(item) in by_identity:
                names.append(by_identity[id(item)])
            else:
                raise ValueError(f"params must hold parameter names or the model's own parameters, got {item!r}")
    if not names:
        raise ValueError("no parameters to differentiate: the model has none that require grad and none were named")
    if len(set(names)) != len(names):
        raise ValueError(f"parameters listed twice in {names}")
    return names


class Objective:
    """f(w) = Σ_b (n_b/N) · loss_fn(model(x_b; w), y_b) over fixed batches, with w one flat vector of size P.

    `loss_fn` must return the mean loss over its batch (as `nn.CrossEntropyLoss()` does), so f is the mean loss over
    all N examples. `dtype` (e.g. torch.float64) evaluates a cast copy of the model; `params` restricts w to the
    named parameters (the rest are held fixed); `bn_mode` is "eval" (running statistics) or "train" (batch
    statistics, running statistics untouched). Inputs are moved to the parameters' device.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batches: Batch | Iterable[Batch],
        *,
        bn_mode: str = "eval",
        dtype: torch.dtype | None = None,
        params: Iterable[str | nn.Parameter] | None = None,
    ) -> None:
        check_choice("bn_mode", bn_mode, BN_MODES)
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        self.model = model
        self.loss_fn = loss_fn
        self.bn_mode = bn_mode
        self.names = _select_parameters(model, params)
        named = dict(model.named_parameters())
        first = named[self.names[0]]
        self.dtype = dtype or first.dtype
        self.device = first.device
        self.shapes = [named[n].shape for n in self.names]
        self.numels = [named[n].numel() for n in self.names]
        self.size = sum(self.numels)
        self.point = torch.cat([named[n].detach().reshape(-1).to(self.dtype) for n in self.names])
        fixed = {n: p for n, p in named.items() if n not in set(self.names)}
        fixed.update(dict(model.named_buffers()))
        self._fixed = {n: self._cast(t.detach()) for n, t in fixed.items()}
        self.batches = [(self._cast(x.to(self.device)), y.to(self.device)) for x, y in as_batches(batches)]
        self.n_examples = sum(x.shape[0] for x, _ in self.batches)
        self._weights = [x.shape[0] / self.n_examples for x, _ in self.batches]
        self._fwd_rev_unsupported = False

    def _cast(self, t: Tensor) -> Tensor:
        return t.to(self.dtype) if t.is_floating_point() else t

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Split a flat vector of size P into the named parameter tensors."""
        if flat.shape != (self.size,):
            raise ValueError(f"expected a flat vector of shape ({self.size},), got {tuple(flat.shape)}")
        parts = torch.split(flat.to(device=self.device, dtype=self.dtype), self.numels)
        return {n: part.view(shape) for n, part, shape in zip(self.names, parts, self.shapes)}

    def flatten(self, tensors: dict[str, Tensor]) -> Tensor:
        """Concatenate named parameter tensors (in this objective's order) into one flat vector."""
        return torch.cat([tensors[n].reshape(-1) for n in self.names])

    def batch_loss(self, params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        """Mean loss on one batch with the given parameter values (call inside `evaluation_mode`)."""
        return self.loss_fn(functional_call(self.model, {**self._fixed, **params}, (x,)), y)

    def value(self, flat: Tensor | None = None) -> Tensor:
        """f(w) at the flat parameter vector (default: the model's current parameters)."""
        params = self.unflatten(self.point if flat is None else flat)
        with torch.no_grad(), evaluation_mode(self.model, self.bn_mode):
            return sum(w * self.batch_loss(params, x, y) for w, (x, y) in zip(self._weights, self.batches))

    def gradient(self, flat: Tensor | None = None) -> Tensor:
        """∇f(w) as a flat vector (default: at the model's current parameters)."""
        params = self.unflatten(self.point if flat is None else flat)
        total = torch.zeros(self.size, dtype=self.dtype, device=self.device)
        with evaluation_mode(self.model, self.bn_mode):
            for w, (x, y) in zip(self._weights, self.batches):
                g = grad(lambda p: self.batch_loss(p, x, y))(params)
                total += w * self.flatten(g)
        return total

    def hvp(self, vector: Tensor, flat: Tensor | None = None, *, mode: str = "fwd_rev") -> Tensor:
        """∇²f(w)·v as a flat vector, summed batch by batch.

        `mode`: "fwd_rev" (forward-over-reverse), "rev_fwd" (reverse-over-forward) or "double_backward". Where torch
        cannot run forward-over-reverse through the loss (see `is_zero_tensor_bug`), "fwd_rev" computes the same
        product reverse-over-forward from then on.
        """
        check_choice("hvp mode", mode, HVP_MODES)
        if mode == "fwd_rev" and self._fwd_rev_unsupported:
            mode = "rev_fwd"
        params = self.unflatten(self.point if flat is None else flat)
        tangent = self.unflatten(vector)
        total = torch.zeros(self.size, dtype=self.dtype, device=self.device)
        with evaluation_mode(self.model, self.bn_mode):
            for w, (x, y) in zip(self._weights, self.batches):
                total += w * self.flatten(self._batch_hvp(params, tangent, x, y, mode))
        return total

    def _batch_hvp(self, params: dict, tangent: dict, x: Tensor, y: Tensor, mode: str) -> dict[str, Tensor]:
        if mode == "double_backward":
            return self._double_backward_hvp(params, tangent, x, y)
        loss = lambda p: self.batch_loss(p, x, y)  # noqa: E731
        if mode == "rev_fwd":
            return reverse_over_forward(loss, params, tangent)
        try:
            return forward_over_reverse(loss, params, tangent)
        except RuntimeError as error:
            if not is_zero_tensor_bug(error):
                raise
            self._fwd_rev_unsupported = True
            return reverse_over_forward(loss, params, tangent)

    def _double_backward_hvp(
        self, params: dict[str, Tensor], tangent: dict[str, Tensor], x: Tensor, y: Tensor
    ) -> dict[str, Tensor]:
        return self._retained_gradient(params, x, y)(tangent, retain_graph=False)

    def _retained_gradient(self, params: dict[str, Tensor], x: Tensor, y: Tensor) -> RetainedGradient:
        """Build the batch gradient with its graph (create_graph=True); return v ↦ ∇(gᵀv), one backward per call."""
        leaves = {n: t.detach().requires_grad_(True) for n, t in params.items()}
        counter = SavedBytes()
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
            loss = self.batch_loss(leaves, x, y)
            grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=True, allow_unused=True)
        return RetainedGradient(leaves, grads, counter.total)

    def custom_functions(self) -> list[str]:
        """Names of the user-defined autograd.Functions in the loss's graph on the first batch (one forward pass).

        torch's own operations either have a tested double backward or raise when asked for one; a custom
        Function whose backward is not differentiable (e.g. marked @once_differentiable) can instead make double
        backward and forward-over-reverse silently drop terms, so products through it need checking.
        """
        (x, y), params = self.batches[0], self.unflatten(self.point)
        leaves = {n: t.detach().requires_grad_(True) for n, t in params.items()}
        with torch.enable_grad(), evaluation_mode(self.model, self.bn_mode):
            loss = self.batch_loss(leaves, x, y)
        found, seen, stack = set(), set(), [loss.grad_fn]
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            if isinstance(node, torch.autograd.function.BackwardCFunction):
                found.add(type(node).__name__.removesuffix("Backward"))
            stack.extend(child for child, _ in node.next_functions)
        return sorted(found)

    def cached_hvp(self, max_bytes: float = math.inf) -> CachedHvp | None:
        """v ↦ ∇²f(w)·v at the snapshot point, each batch's gradient graph built once (here) and kept in memory,
        so that every product is a single backward pass through it (double backward without the recomputation).

        The memory of all graphs is estimated from the first batch's (the bytes autograd saved, scaled by the
        number of examples); when that exceeds `max_bytes` nothing is kept and None is returned.
        """
        params = self.unflatten(self.point)
        products = []
        with evaluation_mode(self.model, self.bn_mode):
            for index, (w, (x, y)) in enumerate(zip(self._weights, self.batches)):
                products.append((w, self._retained_gradient(params, x, y)))
                if index == 0 and products[0][1].nbytes * self.n_examples / x.shape[0] > max_bytes:
                    return None
        return CachedHvp(self, products)


class SavedBytes:
    """Counts the bytes of the distinct tensors autograd saves while it is installed as the saved-tensors hooks:
    the memory a retained graph holds on to (an estimate: inputs and parameters are counted too, once each)."""

    def __init__(self) -> None:
        self.total = 0
        self._seen: set[tuple[torch.device, int, int]] = set()

    def pack(self, tensor: Tensor) -> Tensor:
        key = (tensor.device, tensor.data_ptr(), tensor.numel())
        if key not in self._seen:
            self._seen.add(key)
            self.total += tensor.numel() * tensor.element_size()
        return tensor

    @staticmethod
    def unpack(tensor: Tensor) -> Tensor:
        return tensor


class RetainedGradient:
    """One batch's gradient g(w) with its graph kept; calling it with a tangent v returns ∇(gᵀv) = H_b·v.

    `nbytes` is the memory the graph holds (see SavedBytes).
    """

    def __init__(self, leaves: dict[str, Tensor], grads: Sequence[Tensor | None], nbytes: int) -> None:
        self.leaves = leaves
        self.grads = grads
        self.nbytes = nbytes

    def __call__(self, tangent: dict[str, Tensor], retain_graph: bool = True) -> dict[str, Tensor]:
        leaves = self.leaves
        with torch.enable_grad():
            terms = [(g * tangent[n]).sum() for n, g in zip(leaves, self.grads) if g is not None and g.requires_grad]
            if not terms:
                return {n: torch.zeros_like(t) for n, t in leaves.items()}
            second = torch.autograd.grad(
                sum(terms), list(leaves.values()), retain_graph=retain_graph, allow_unused=True
            )
        return {n: torch.zeros_like(leaves[n]) if s is None else s for n, s in zip(leaves, second)}


class CachedHvp:
    """Hessian-vector products through retained gradient graphs, one backward pass per batch and product."""

    def __init__(self, objective: Objective, products: list[tuple[float, RetainedGradient]]) -> None:
        self.objective = objective
        self.products = products
        self.nbytes = sum(product.nbytes for _, product in products)

    def __call__(self, vector: Tensor) -> Tensor:
        objective = self.objective
        tangent = objective.unflatten(vector)
        total = torch.zeros(objective.size, dtype=objective.dtype, device=objective.device)
        for w, product in self.products:
            total += w * objective.flatten(product(tangent))
        return total
