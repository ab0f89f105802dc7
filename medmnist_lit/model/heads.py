"""Plain ``nn.Module`` classification heads on flattened images.

The heads know nothing about training; :class:`medmnist_lit.model.classifier.Classifier` wraps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

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
