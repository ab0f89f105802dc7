"""Plain ``nn.Module`` classification heads on flattened images, and several heads stacked into one.

The heads know nothing about training; :class:`medmnist_lit.model.classifier.Classifier` wraps them, and
:mod:`medmnist_lit.cv.fold_parallel` trains stacked heads of many folds at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

HeadName = Literal["logistic", "mlp"]
ActivationName = Literal["relu", "gelu", "tanh", "sigmoid", "leaky_relu", "elu", "silu"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
}


class LogisticRegression(nn.Module):
    """Multinomial logistic regression: one linear layer on the flattened image.

    With cross-entropy this is exactly softmax regression, the course's ``nn.Linear(64*64, num_classes)``.

    Args:
        in_features: Number of input values per sample (``C*H*W``).
        num_classes: Number of output logits.
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Return logits for a batch of images of any shape ``N×...``."""
        return self.linear(x.flatten(1))


class MLP(nn.Module):
    """Multi-layer perceptron on the flattened image.

    Each hidden block is ``Linear -> [BatchNorm1d] -> activation -> [Dropout]``.

    Args:
        in_features: Number of input values per sample (``C*H*W``).
        num_classes: Number of output logits.
        hidden_sizes: Width of each hidden layer, e.g. ``(512, 512)``.
        activation: Name of the activation (see :data:`ACTIVATIONS`).
        dropout: Dropout probability after each hidden activation (0 disables it).
        batch_norm: Whether to add ``BatchNorm1d`` after each hidden linear layer.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden_sizes: Sequence[int] = (512, 512),
        activation: ActivationName = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if not hidden_sizes:
            raise ValueError("MLP needs at least one hidden size; use head='logistic' for a linear model")
        if any(int(h) < 1 for h in hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive integers, got {list(hidden_sizes)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden_sizes:
            layers.append(nn.Linear(width, int(size)))
            if batch_norm:
                layers.append(nn.BatchNorm1d(int(size)))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(size)
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Return logits for a batch of images of any shape ``N×...``."""
        return self.layers(x.flatten(1))


def build_head(
    head: HeadName,
    in_features: int,
    num_classes: int,
    *,
    hidden_sizes: Sequence[int] = (512, 512),
    activation: ActivationName = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> nn.Module:
    """Build the head named ``head`` (``"logistic"`` or ``"mlp"``).

    ``hidden_sizes``, ``activation``, ``dropout`` and ``batch_norm`` only apply to the MLP.
    """
    if head == "logistic":
        return LogisticRegression(in_features, num_classes)
    if head == "mlp":
        return MLP(in_features, num_classes, hidden_sizes, activation, dropout, batch_norm)
    raise ValueError(f"unknown head {head!r}; choose 'logistic' or 'mlp'")


class StackedHead(nn.Module):
    """``K`` heads of identical architecture as stacked parameters; one forward gives all ``K`` heads' logits.

    The first layer of heads that share an input is one matrix product with the ``K`` weight matrices side by
    side; later layers (and per-fold inputs) use batched matrix products.

    Args:
        heads: Logistic-regression or MLP heads (without batch norm), all of the same architecture.
    """

    def __init__(self, heads: Sequence[nn.Module]) -> None:
        super().__init__()
        layers = [[m for m in head.modules() if isinstance(m, nn.Linear)] for head in heads]
        self.names = [name for name, m in heads[0].named_modules() if isinstance(m, nn.Linear)]
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.stack([h[i].weight.detach() for h in layers]).clone()) for i in range(len(self.names))]
        )
        self.biases = nn.ParameterList(
            [nn.Parameter(torch.stack([h[i].bias.detach() for h in layers]).clone()) for i in range(len(self.names))]
        )
        template = heads[0]
        self.activation = next(
            (
                m
                for m in template.modules()
                if not isinstance(m, (nn.Linear, nn.Dropout, nn.Sequential, type(template)))
            ),
            nn.Identity(),
        )
        self.dropout = next((m for m in template.modules() if isinstance(m, nn.Dropout)), nn.Identity())

    @property
    def num_heads(self) -> int:
        """Number of stacked heads."""
        return len(self.weights[0])

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``K×B×classes`` of images ``B×C×H×W`` (shared) or ``K×B×C×H×W`` (one input per head)."""
        k = self.num_heads
        shared = x.dim() == 4
        h = x.flatten(1) if shared else x.flatten(2)
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            if shared and i == 0:
                out = weight.shape[1]
                h = (h @ weight.reshape(k * out, -1).T).view(len(h), k, out).transpose(0, 1) + bias[:, None]
            else:
                h = torch.baddbmm(bias[:, None], h, weight.transpose(1, 2))
            if i + 1 < len(self.weights):
                h = self.dropout(self.activation(h))
        return h

    def forward_head(self, index: int, x: Tensor) -> Tensor:
        """Logits ``B×classes`` of head ``index`` alone (validation, where each sample has one owning fold)."""
        h = x.flatten(1)
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = nn.functional.linear(h, weight[index], bias[index])
            if i + 1 < len(self.weights):
                h = self.dropout(self.activation(h))
        return h

    def head_state(self, index: int, weights: Sequence[Tensor], biases: Sequence[Tensor]) -> dict[str, Tensor]:
        """State dict of head ``index`` (keys of the original head) from stacked ``weights`` and ``biases``."""
        state = {}
        for name, w, b in zip(self.names, weights, biases, strict=True):
            state[f"{name}.weight"] = w[index].detach().clone()
            state[f"{name}.bias"] = b[index].detach().clone()
        return state

    def clip_grad_norm_(self, max_norm: float) -> None:
        """Clip each head's gradient to L2 norm ``max_norm``, as ``clip_grad_norm_`` would clip that head alone.

        One norm over all heads would couple the folds: each must be clipped as if it trained on its own.
        """
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if not grads:
            return
        norms = torch.stack([g.detach().reshape(len(g), -1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
        factor = (max_norm / (norms + 1e-6)).clamp(max=1.0)  # clip_grad_norm_'s formula, per head
        for g in grads:
            g.mul_(factor.view(-1, *[1] * (g.dim() - 1)).to(g.dtype))
