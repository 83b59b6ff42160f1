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


def norm_layer(kind, channels, spatial):
    """model.norm after a layer with `channels` outputs and `spatial` dimensions after them.
    Synchronized batch norm evaluates (and stores) exactly what batch norm does."""
    if kind in ("batch", "sync_batch"):
        return nn.BatchNorm2d(channels) if spatial == 2 else nn.BatchNorm1d(channels)
    if kind == "layer":
        return nn.LayerNorm(channels) if spatial == 0 else nn.GroupNorm(1, channels)
    return nn.Identity()


def mlp_cnn_norm(m):
    return m.get("norm", "batch") if m["batch_norm"] else "none"


class Mlp(nn.Module):
    def __init__(self, m, shape, outputs):
        super().__init__()
        width, layers, norm = math.prod(shape), [], mlp_cnn_norm(m)
        for h in m["hidden"]:
            layers.append(nn.Linear(width, h))
            if norm != "none":
                layers.append(norm_layer(norm, h, 0))
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
        features, norm = [], mlp_cnn_norm(m)
        for c in m["channels"]:
            features.append(nn.Conv2d(channels, c, 3, padding=1, bias=norm == "none"))
            if norm != "none":
                features.append(norm_layer(norm, c, 2))
            features += [nn.ReLU(), nn.MaxPool2d(2)]
            channels, h, w = c, h // 2, w // 2
        head = [nn.Linear(channels * h * w, m["fc_width"]), nn.ReLU()]
        if m["dropout"] > 0:
            head.append(nn.Dropout(m["dropout"]))
        head.append(nn.Linear(m["fc_width"], outputs))
        self.features, self.head = nn.Sequential(*features), nn.Sequential(*head)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def conv_norm(kind, channels):
    return norm_layer(kind, channels, 2)


def conv(cin, cout, kernel, stride, bias):
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=bias)


class ResidualBlock(nn.Module):
    def __init__(self, cin, planes, stride, bottleneck, norm):
        super().__init__()
        bias, out = norm == "none", planes * 4 if bottleneck else planes
        if bottleneck:
            body = [conv(cin, planes, 1, 1, bias), conv_norm(norm, planes), nn.ReLU(),
                    conv(planes, planes, 3, stride, bias), conv_norm(norm, planes), nn.ReLU(),
                    conv(planes, out, 1, 1, bias), conv_norm(norm, out)]
        else:
            body = [conv(cin, planes, 3, stride, bias), conv_norm(norm, planes), nn.ReLU(),
                    conv(planes, planes, 3, 1, bias), conv_norm(norm, planes)]
        self.body = nn.Sequential(*body)
        shortcut = [conv(cin, out, 1, stride, bias), conv_norm(norm, out)] if stride != 1 or cin != out else []
        self.shortcut = nn.Sequential(*shortcut)

    def forward(self, x):
        skip = self.shortcut(x) if len(self.shortcut) else x
        return torch.relu(self.body(x) + skip)


class ResNet(nn.Module):
    def __init__(self, m, shape, outputs):
        super().__init__()
        bias, width, norm = m["norm"] == "none", m["width"], m["norm"]
        if m["stem"] == "imagenet":
            self.stem = nn.Sequential(conv(shape[0], width, 7, 2, bias), conv_norm(norm, width), nn.ReLU(),
                                      nn.MaxPool2d(3, stride=2, padding=1))
        else:
            self.stem = nn.Sequential(conv(shape[0], width, 3, 1, bias), conv_norm(norm, width), nn.ReLU())
        channels, self.count = width, 0
        for stage, n in enumerate(m["blocks"]):
            planes = width << stage
            for b in range(n):
                block = ResidualBlock(channels, planes, 2 if stage > 0 and b == 0 else 1,
                                      m["block"] == "bottleneck", norm)
                self.add_module(f"block{self.count}", block)
                self.count += 1
                channels = planes * 4 if m["block"] == "bottleneck" else planes
        self.dropout = nn.Dropout(m["dropout"]) if m["dropout"] > 0 else None
        self.fc = nn.Linear(channels, outputs)

    def forward(self, x):
        x = self.stem(x)
        for i in range(self.count):
            x = getattr(self, f"block{i}")(x)
        x = x.mean((2, 3))
        if self.dropout is not None:
            x = self.dropout(x)
        return self.fc(x)


class EncoderBlock(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, dropout, causal=False, gelu="erf"):
        super().__init__()
        self.heads, self.p, self.causal = heads, dropout, causal
        # model.gelu: exact (erf) or GPT-2's tanh approximation.
        self.approximate = "tanh" if gelu == "tanh" else "none"
        self.norm1, self.qkv, self.proj = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        hidden = int(dim * mlp_ratio)
        self.norm2, self.fc1, self.fc2 = nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=self.p if self.training else 0.0,
                                                       is_causal=self.causal)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(n, t, d)))
        return x + self.drop(self.fc2(nn.functional.gelu(self.fc1(self.norm2(x)), approximate=self.approximate)))


class Transformer(nn.Module):
    def __init__(self, m, shape, outputs):
        super().__init__()
        d = m["embed_dim"]
        self.patch = self.step = None
        if len(shape) == 3:
            self.patch = nn.Conv2d(shape[0], d, m["patch_size"], stride=m["patch_size"])
            tokens = (shape[1] // m["patch_size"]) * (shape[2] // m["patch_size"])
        elif len(shape) == 2:  # series windows [V, T]: T tokens of V values
            self.step, tokens = nn.Linear(shape[0], d), shape[1]
        else:
            self.feature_embedding = nn.Parameter(torch.zeros(shape[0], d))
            self.feature_bias = nn.Parameter(torch.zeros(shape[0], d))
            tokens = shape[0]
        self.position = nn.Parameter(torch.zeros(1, tokens, d))
        self.count, self.causal = m["layers"], m.get("causal", False)
        for i in range(self.count):
            self.add_module(f"block{i}", EncoderBlock(d, m["heads"], m["mlp_ratio"], m["dropout"], self.causal,
                                                      m.get("gelu", "erf")))
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, outputs)

    def forward(self, x):
        if self.patch is not None:
            x = self.patch(x).flatten(2).transpose(1, 2)
        elif self.step is not None:
            x = self.step(x.transpose(1, 2))
        else:
            x = x.unsqueeze(-1) * self.feature_embedding + self.feature_bias
        x = x + self.position
        for i in range(self.count):
            x = getattr(self, f"block{i}")(x)
        # model.causal: causal attention (a GPT-style decoder), the last token's state to the head.
        return self.head(self.norm(x[:, -1]) if self.causal else self.norm(x).mean(1))



def _lstm(inputs, m, bidirectional):
    layers = m["rnn_layers"]
    return nn.LSTM(inputs, m["hidden_size"], num_layers=layers, batch_first=True, bidirectional=bidirectional,
                   dropout=m["dropout"] if layers > 1 else 0.0)


def _final_state(lstm, x, bidirectional):
    h = lstm(x)[1][0]
    return torch.cat([h[-2], h[-1]], 1) if bidirectional else h[-1]


class Lstm(nn.Module):
    """lstm and bilstm: series windows [V, T]."""

    def __init__(self, m, shape, outputs, bidirectional=False):
        super().__init__()
        self.bidirectional = bidirectional
        self.lstm = _lstm(shape[0], m, bidirectional)
        self.drop = nn.Dropout(m["dropout"])
        self.head = nn.Linear(m["hidden_size"] * (2 if bidirectional else 1), outputs)

    def forward(self, x):
        return self.head(self.drop(_final_state(self.lstm, x.transpose(1, 2), self.bidirectional)))


class BiLstm(Lstm):
    def __init__(self, m, shape, outputs):
        super().__init__(m, shape, outputs, bidirectional=True)


class CnnBiLstm(nn.Module):
    def __init__(self, m, shape, outputs):
        super().__init__()
        layers, channels, k = [], shape[0], m["kernel_size"]
        for out in m["channels"]:
            layers.append(nn.Conv1d(channels, out, k, padding=k // 2, bias=m["norm"] == "none"))
            if m["norm"] != "none":
                layers.append(norm_layer(m["norm"], out, 1))
            layers.append(nn.ReLU())
            channels = out
        self.features = nn.Sequential(*layers)
        self.lstm = _lstm(channels, m, True)
        self.drop = nn.Dropout(m["dropout"])
        self.head = nn.Linear(2 * m["hidden_size"], outputs)

    def forward(self, x):
        return self.head(self.drop(_final_state(self.lstm, self.features(x).transpose(1, 2), True)))


class GatedResidual(nn.Module):
    def __init__(self, inputs, hidden, out, dropout):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(inputs, hidden), nn.Linear(hidden, hidden)
        self.gate = nn.Linear(hidden, 2 * out)
        self.skip = nn.Linear(inputs, out) if inputs != out else None
        self.norm, self.drop = nn.LayerNorm(out), nn.Dropout(dropout)

    def forward(self, x):
        h = self.drop(self.fc2(nn.functional.elu(self.fc1(x))))
        return self.norm((self.skip(x) if self.skip is not None else x) + nn.functional.glu(self.gate(h), -1))


class Forecaster(nn.Module):
    """The temporal-fusion-style forecaster (docs/models.md)."""

    def __init__(self, m, shape, outputs):
        super().__init__()
        d, v, p = m["hidden_size"], shape[0], m["dropout"]
        self.heads = m["heads"]
        self.embedding = nn.Parameter(torch.zeros(v, d))
        self.embedding_bias = nn.Parameter(torch.zeros(v, d))
        self.variable, self.selection = GatedResidual(d, d, d, p), GatedResidual(v * d, d, v, p)
        self.lstm = nn.LSTM(d, d, num_layers=m["rnn_layers"], batch_first=True,
                            dropout=p if m["rnn_layers"] > 1 else 0.0)
        self.lstm_gate, self.lstm_norm = nn.Linear(d, 2 * d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.attention_gate, self.attention_norm = nn.Linear(d, 2 * d), nn.LayerNorm(d)
        self.output = GatedResidual(d, d, d, p)
        self.drop = nn.Dropout(p)
        self.head = nn.Linear(d, outputs)

    def forward(self, x):
        n, t, d = x.shape[0], x.shape[2], self.embedding.shape[1]
        e = x.transpose(1, 2).unsqueeze(-1) * self.embedding + self.embedding_bias
        weights = torch.softmax(self.selection(e.flatten(2)), -1).unsqueeze(-1)
        z = (weights * self.variable(e)).sum(2)
        z = self.lstm_norm(z + nn.functional.glu(self.lstm_gate(self.drop(self.lstm(z)[0])), -1))
        q, k, v = self.qkv(z).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=self.drop.p if self.training else 0.0,
                                                       is_causal=True)
        a = self.proj(a.transpose(1, 2).reshape(n, t, d))
        z = self.attention_norm(z + nn.functional.glu(self.attention_gate(self.drop(a)), -1))
        return self.head(self.output(z[:, t - 1]))


def load(model_dir):
    """The exported model (in eval mode) and its description."""
    with open(os.path.join(model_dir, "model.json")) as f:
        d = json.load(f)
    kinds = {"mlp": Mlp, "cnn": Cnn, "resnet": ResNet, "transformer": Transformer, "lstm": Lstm, "bilstm": BiLstm,
             "cnn_bilstm": CnnBiLstm, "forecaster": Forecaster}
    model = kinds[d["model"]["name"]](d["model"], d["sample_shape"], d["outputs"])
    model.load_state_dict(load_file(os.path.join(model_dir, "model.safetensors")), strict=True)
    return model.eval(), d


@torch.no_grad()
def predict(model, d, inputs, batch=256):
    """Class probabilities [n, K] (classification), values [n] (regression), or one value
    per quantile level [n, Q] (a model trained with the quantile loss: d["quantiles"]),
    float64, from stored inputs (uint8 images or float32 features, as in the data set)."""
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
            # S target values per sample (targets [N, S]) and Q quantile levels each:
            # [n], [n, S], [n, Q] or [n, S, Q], as `hpctrain predict` writes them.
            q = len(d.get("quantiles") or [])
            width = d["outputs"] // max(q, 1)
            shape = [len(y)] + ([width] if width > 1 else []) + ([q] if q else [])
            out.append(y.reshape(shape) * d["target"]["std"] + d["target"]["mean"])
    return torch.cat(out)
