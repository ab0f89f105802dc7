"""Heads, loss and optimizers, without a Trainer."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

from medmnist_lit.model.classifier import Classifier, instantiate, scheduler_interval
from medmnist_lit.model.heads import MLP, LogisticRegression, build_head

OPTIMIZERS = {
    "sgd": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.5}},
    "momentum": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05, "momentum": 0.9}},
    "nesterov": {
        "class_path": "SGD",
        "init_args": {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},
    },
    "adagrad": {"class_path": "torch.optim.Adagrad", "init_args": {"lr": 0.05}},
    "adam": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}},
    "adamw": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01, "weight_decay": 0.01}},
    "rmsprop": {"class_path": "torch.optim.RMSprop", "init_args": {"lr": 0.001}},
}


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    x = torch.tensor(data.images[:256], dtype=torch.float32).unsqueeze(1) / 16
    return x, torch.tensor(data.target[:256])


def test_heads_map_images_to_logits() -> None:
    x = torch.rand(5, 1, 8, 8)
    assert LogisticRegression(64, 3)(x).shape == (5, 3)
    mlp = MLP(64, 3, hidden_sizes=(7, 5), activation="tanh", dropout=0.1, batch_norm=True)
    assert mlp(x).shape == (5, 3)
    kinds = [type(m).__name__ for m in mlp.layers]
    assert kinds == [
        "Linear",
        "BatchNorm1d",
        "Tanh",
        "Dropout",
        "Linear",
        "BatchNorm1d",
        "Tanh",
        "Dropout",
        "Linear",
    ]
    assert isinstance(build_head("logistic", 64, 3), LogisticRegression)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden_sizes": ()}, "at least one hidden size"),
        ({"hidden_sizes": (4, 0)}, "positive integers"),
        ({"dropout": 1.0}, "dropout"),
        ({"activation": "swish"}, "unknown activation"),
    ],
)
def test_mlp_rejects_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MLP(64, 3, **kwargs)


@pytest.mark.parametrize("head", ["logistic", "mlp"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_each_head_and_optimizer_lowers_the_loss(digits, head: str, optimizer: str) -> None:
    torch.manual_seed(0)
    x, y = digits
    model = Classifier(
        num_classes=10, input_shape=(1, 8, 8), head=head, hidden_sizes=[32], optimizer=OPTIMIZERS[optimizer]
    )
    opt = model.configure_optimizers()
    first = model.loss(model(x), y).item()
    for _ in range(15):
        loss = model.loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model.loss(model(x), y).item() < 0.9 * first


def test_default_optimizer_is_the_course_recipe() -> None:
    model = Classifier(num_classes=6, input_shape=(1, 64, 64))
    opt = model.configure_optimizers()
    assert type(opt).__name__ == "SGD" and opt.param_groups[0]["lr"] == 0.001
    assert model.head.linear.in_features == 64 * 64


def test_loss_uses_label_smoothing_and_class_weights() -> None:
    logits, target = torch.randn(8, 3), torch.tensor([0, 1, 2, 0, 1, 2, 0, 0])
    model = Classifier(num_classes=3, input_shape=(1, 2, 2), label_smoothing=0.1, class_weights=[1.0, 2.0, 3.0])
    expected = torch.nn.functional.cross_entropy(
        logits, target, weight=torch.tensor([1.0, 2.0, 3.0]), label_smoothing=0.1
    )
    assert torch.allclose(model.loss(logits, target), expected)


def test_scheduler_config_and_interval() -> None:
    model = Classifier(
        num_classes=3,
        input_shape=(1, 2, 2),
        lr_scheduler={
            "class_path": "torch.optim.lr_scheduler.CyclicLR",
            "init_args": {"base_lr": 0.01, "max_lr": 0.1},
        },
    )
    config = model.configure_optimizers()
    assert config["lr_scheduler"]["interval"] == "step"
    step = instantiate(
        {"class_path": "StepLR", "init_args": {"step_size": 2}},
        config["optimizer"],
        "torch.optim.lr_scheduler",
    )
    assert scheduler_interval(step) == "epoch"


def test_bad_optimizer_path_names_it() -> None:
    model = Classifier(num_classes=3, input_shape=(1, 2, 2), optimizer={"class_path": "torch.optim.Adamm"})
    with pytest.raises(ValueError, match=r"torch\.optim\.Adamm"):
        model.configure_optimizers()
