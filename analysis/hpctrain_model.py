"""Loads a model exported by `hpctrain export RUN_DIR` into PyTorch (docs/checkpoints.md).

    import sys; sys.path.insert(0, "analysis")
    from hpctrain_model import load, predict
    model, description = load("runs/fashion_mnist_cnn/export")
    scores = predict(model, description, images_uint8)   # [n, classes] probabilities

The module mirrors hpctrain's model registry (src/models/Registry.cpp) layer for layer, so
the parameter names of model.safetensors match; the inputs are normalized with the
training statistics stored in model.json."""
import json
import math
import os

import torch
from safetensors.torch import load_file
from torch import nn


class Mlp(nn.Module):
    def __init__(self, m, shape, outputs):
        super().__init__()
        width, layers = math.prod(shape), []
        for h in m["hidden"]:
            layers.append(nn.Linear(width, h))
            if m["batch_norm"]:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            if m["dropout"] > 0:
                layers.append(nn.Dropout(m["dropout"]))
            width = h
        layers.append(nn.Linear(width, outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x.flatten(1))


class Cnn(nn.Module):
    def __init__(self, m, shape, outputs):
        super().__init__()
        channels, h, w = shape
        features = []
        for c in m["channels"]:
            features.append(nn.Conv2d(channels, c, 3, padding=1, bias=not m["batch_norm"]))
            if m["batch_norm"]:
                features.append(nn.BatchNorm2d(c))
            features += [nn.ReLU(), nn.MaxPool2d(2)]
            channels, h, w = c, h // 2, w // 2
        head = [nn.Linear(channels * h * w, m["fc_width"]), nn.ReLU()]
        if m["dropout"] > 0:
            head.append(nn.Dropout(m["dropout"]))
        head.append(nn.Linear(m["fc_width"], outputs))
        self.features, self.head = nn.Sequential(*features), nn.Sequential(*head)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def load(model_dir):
    """The exported model (in eval mode) and its description."""
    with open(os.path.join(model_dir, "model.json")) as f:
        d = json.load(f)
    kinds = {"mlp": Mlp, "cnn": Cnn}
    model = kinds[d["model"]["name"]](d["model"], d["sample_shape"], d["outputs"])
    model.load_state_dict(load_file(os.path.join(model_dir, "model.safetensors")), strict=True)
    return model.eval(), d


@torch.no_grad()
def predict(model, d, inputs, batch=256):
    """Class probabilities [n, K] (classification) or values [n] (regression), float64,
    from stored inputs (uint8 images or float32 features, as in the data set)."""
    x = torch.as_tensor(inputs).float()
    shape = [1, len(d["normalization"]["mean"])] + [1] * (x.dim() - 2)
    mean = torch.tensor(d["normalization"]["mean"], dtype=torch.float32).view(shape)
    inv = 1.0 / torch.tensor(d["normalization"]["std"], dtype=torch.float32).view(shape)
    out = []
    for i in range(0, len(x), batch):
        y = model((x[i:i + batch] - mean) * inv).double()
        if d["task"] == "classification":
            out.append(torch.softmax(y, 1))
        else:
            out.append(y.reshape(-1) * d["target"]["std"] + d["target"]["mean"])
    return torch.cat(out)
