"""ONNX and TorchScript files of a model exported by `hpctrain export RUN_DIR`
(docs/checkpoints.md, "ONNX and TorchScript"), through the Python mirror of the models
(analysis/hpctrain_model.py):

    .venv/bin/python analysis/export_formats.py runs/fashion_mnist_cnn/export
    # -> model.onnx and model.torchscript.pt beside model.json

Both files hold the whole inference path of `hpctrain predict`: the stored inputs (uint8
images or float32 features, as float32 [n, ...sample_shape]) are normalized with the
training statistics, run through the model and turned into what `predict` writes:
softmax probabilities [n, K] for classification, values in the target's units for
regression ([n], [n, S], [n, Q] or [n, S, Q] as `predict`'s /prediction or /quantiles).
Float32 throughout; the batch size is free. ONNX: input "input", output "output", opset 18,
through torch.onnx.export's TorchScript-based exporter (dynamo=False). TorchScript:
torch.jit.trace of the same module, loadable in LibTorch with torch::jit::load."""
import argparse
import os
import sys
import warnings

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hpctrain_model import load  # noqa: E402

ONNX_OPSET = 18


class Deployable(nn.Module):
    """The model with `predict`'s normalization before and its output transform after."""

    def __init__(self, model, d):
        super().__init__()
        self.model = model
        channels = len(d["normalization"]["mean"])
        shape = [1, channels] + [1] * (len(d["sample_shape"]) - 1)
        self.register_buffer("mean", torch.tensor(d["normalization"]["mean"], dtype=torch.float32).view(shape))
        self.register_buffer("inv_std",
                             1.0 / torch.tensor(d["normalization"]["std"], dtype=torch.float32).view(shape))
        self.classification = d["task"] == "classification"
        q = len(d.get("quantiles") or [])
        width = d["outputs"] // max(q, 1)
        self.trailing = ([width] if width > 1 else []) + ([q] if q else [])
        self.target_mean = float(d["target"]["mean"])
        self.target_std = float(d["target"]["std"])

    def forward(self, x):
        y = self.model((x - self.mean) * self.inv_std)
        if self.classification:
            return torch.softmax(y, 1)
        return y.reshape([y.shape[0]] + self.trailing) * self.target_std + self.target_mean


def example_input(d, n=2):
    return torch.rand([n] + list(d["sample_shape"])) * (255.0 if d["input_dtype"] == "uint8" else 1.0)


def deployable(model_dir):
    model, d = load(model_dir)
    return Deployable(model, d).eval(), d


def write_torchscript(module, d, path):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, example_input(d), check_trace=False)
    traced.save(path)
    return path


def write_onnx(module, d, path):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example_input(d),), path, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=ONNX_OPSET,
                          dynamo=False)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir", help="the folder `hpctrain export` wrote (model.json, model.safetensors)")
    p.add_argument("--onnx", help="ONNX file to write (default: MODEL_DIR/model.onnx)")
    p.add_argument("--torchscript", help="TorchScript file to write (default: MODEL_DIR/model.torchscript.pt)")
    p.add_argument("--formats", default="onnx,torchscript", help="comma-separated: onnx, torchscript")
    a = p.parse_args(argv)
    module, d = deployable(a.model_dir)
    formats = {f.strip() for f in a.formats.split(",") if f.strip()}
    unknown = formats - {"onnx", "torchscript"}
    if unknown:
        p.error("unknown format(s): " + ", ".join(sorted(unknown)))
    if "torchscript" in formats:
        print("wrote", write_torchscript(module, d, a.torchscript or os.path.join(a.model_dir, "model.torchscript.pt")))
    if "onnx" in formats:
        print("wrote", write_onnx(module, d, a.onnx or os.path.join(a.model_dir, "model.onnx")))


if __name__ == "__main__":
    main()
