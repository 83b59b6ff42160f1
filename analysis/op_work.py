"""The work one ATen operator did, from the shapes a Kineto trace records with it (analysis/op_profile.py
uses it): floating-point operations for the compute-bound operators, bytes moved for the
memory-bound ones.

    work(name, args) -> ("flop", n) | ("byte", n) | None

`args` is a trace event's "args": "Input Dims" (one list per argument; a tensor list is a list
of lists), "Input type" (the dtype of tensor arguments; "TensorList", "Scalar", ... otherwise)
and, when the profiler recorded them, "Concrete Inputs" (scalars and int lists as strings).

FLOPs (a multiply-add is 2):
  mm, addmm, _addmm_activation, bmm, baddbmm, matmul, linear, mv, addmv: 2*M*N*K (batched: *B).
  Convolution forward (conv1d/2d/3d, convolution, _convolution, mkldnn_convolution,
    _slow_conv2d_forward, thnn_conv2d, _nnpack_spatial_convolution):
    2 * N * Cout * prod(out spatial) * Cin/groups * prod(kernel); the output size from stride,
    padding and dilation in Concrete Inputs (missing: stride 1, padding that keeps the size).
    Transposed: 2 * N * Cin * prod(in spatial) * Cout/groups * prod(kernel).
  convolution_backward: the same product for the input gradient and again for the weight
    gradient, each only where output_mask asks for it (missing mask: both), plus
    N*Cout*prod(out spatial) for the bias gradient.
  mkldnn_rnn_layer (one LSTM layer and direction): 2 * T*N * (4H*I + 4H*H); its backward twice that.
  _scaled_dot_product_flash_attention_for_cpu: 4*B*H*L*S*E; its backward 2.5 times that.
Bytes (every tensor argument read once, the output written once, unless listed):
  elementwise (add, mul, div, relu, clamp_min, threshold_backward, gelu, softmax, ...): the
    inputs plus one output of their broadcast shape (in place: the same, `self` counts as read
    and written).
  reductions (sum, mean, norm, argmax, *_loss, ...): the inputs (the output is small).
  copy_: the source read and the destination written; clone/_to_copy with no copy_ inside: twice
    the input.
  fill_, zero_: the tensor written.
  cat, stack: the inputs read and written once more.
  max_pool2d_with_indices: the input, the output and its int64 indices.
  max_pool2d_with_indices_backward: grad_output and indices read, grad_input (input-sized)
    zeroed and then written (2x; the zeroing fill_ inside it is not counted again).
  native_batch_norm (training): the input read twice (statistics, then normalization), the
    output written: 3x the input (evaluation: 2x).
  native_batch_norm_backward: grad_output and input read for the channel sums, both again for
    grad_input, grad_input written: 5x the input (without grad_input: 2x).
  native_layer_norm: 2x the input; native_layer_norm_backward: 3x the input.
  _fused_adamw_, _fused_adam_: parameters, first and second moments read and written, gradients
    read: 7x the parameter list (4-byte elements assumed).
  _foreach_* and _amp_foreach_non_finite_check_and_unscale_ (in place on a tensor list): the
    list read and written, 4-byte elements assumed (traces give no dtype per list entry);
    _foreach_norm: read once.
  hpctrain::batch_norm_relu_pool (models/NormPool.hpp; recorded with its input x): x read three
    times (mean, squared deviations, normalize and pool), the quarter-size output and input-at-
    maximum written (float) and the window positions (1 byte): 3.5625x the input.
  hpctrain::batch_norm_relu_pool_backward (recorded with grad_output g, a quarter of the input):
    g, the output and the input-at-maximum read for the sums (3g), then the input (4g), g, the
    output and the positions (g/4) read and the input gradient written (4g): 13.25x g.
    (Both rules are for float32; with bfloat16 tensors the input-at-maximum stays float32 and
    the estimate is off by that share.)
  hpctrain::batch_norm_act (models/NormAct.hpp; recorded with its input x and, in a residual
    block, the residual): x read three times (mean, squared deviations, normalize) and the
    output written, 4x the input, plus the residual read once.
  hpctrain::batch_norm_act_backward (recorded with grad_output g and, in a residual block, the
    residual's gradient): g, the output and the input read for the sums, then again while the
    input gradient is written, 7x g, plus the residual's gradient written once.
  hpctrain::counter_dropout and its backward (models/CounterDropout.hpp): the input read and
    the output written: 2x the input (the mask is computed, not read).
Anything else (views, allocations, RNG such as bernoulli_, indexing) has no work estimate."""
import ast
import math

ELEMENT_BYTES = {"float": 4, "double": 8, "c10::Half": 2, "c10::BFloat16": 2, "long int": 8, "int": 4,
                 "short int": 2, "signed char": 1, "unsigned char": 1, "bool": 1, "c10::complex<float>": 8,
                 "c10::complex<double>": 16}
ELEMENTWISE = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "addcmul_", "addcdiv_", "addcmul",
               "addcdiv", "sqrt", "sqrt_", "rsqrt", "relu", "relu_", "clamp_min", "clamp_min_", "clamp", "clamp_",
               "clamp_max", "threshold", "threshold_backward", "gelu", "gelu_backward", "silu", "silu_backward",
               "sigmoid", "sigmoid_backward", "tanh", "tanh_backward", "exp", "log", "neg", "abs", "where",
               "lerp_", "maximum", "minimum", "pow", "reciprocal", "_softmax", "_log_softmax",
               "_softmax_backward_data", "_log_softmax_backward_data", "hardtanh", "hardtanh_backward",
               "leaky_relu", "leaky_relu_backward", "eq", "ne", "isfinite", "isneginf", "masked_fill_"}
REDUCTIONS = {"sum", "mean", "norm", "linalg_vector_norm", "argmax", "amax", "max", "min", "all", "any",
              "mse_loss", "mse_loss_backward", "nll_loss_forward", "nll_loss_backward", "_foreach_norm"}
HPCTRAIN_BYTES = {  # name -> bytes per byte of each recorded tensor, in order
    "hpctrain::batch_norm_relu_pool": (3.5625,), "hpctrain::batch_norm_relu_pool_backward": (13.25,),
    "hpctrain::batch_norm_act": (4.0, 1.0), "hpctrain::batch_norm_act_backward": (7.0, 1.0),
    "hpctrain::counter_dropout": (2.0,), "hpctrain::counter_dropout_backward": (2.0,)}
CONV_FORWARD = {  # name -> (stride, padding, dilation, transposed, groups) argument indices (None: absent)
    "conv1d": (3, 4, 5, None, 6), "conv2d": (3, 4, 5, None, 6), "conv3d": (3, 4, 5, None, 6),
    "convolution": (3, 4, 5, 6, 8), "_convolution": (3, 4, 5, 6, 8),
    "mkldnn_convolution": (4, 3, 5, None, 6), "_slow_conv2d_forward": (4, 5, None, None, None),
    "thnn_conv2d": (4, 5, None, None, None), "_nnpack_spatial_convolution": (4, 3, None, None, None),
}


def _concrete(args, i):
    """Concrete Inputs[i] parsed (an int, a float, a bool, a list), or None."""
    values = args.get("Concrete Inputs") or []
    if i is None or i >= len(values) or values[i] in ("", None):
        return None
    text = values[i]
    if text in ("True", "False"):
        return text == "True"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _dims(args):
    return args.get("Input Dims") or []


def _types(args):
    return args.get("Input type") or []


def _prod(values):
    return math.prod(int(v) for v in values)


def _tensors(args):
    """(dims, element bytes) of each tensor argument; a tensor list counts each entry at 4 bytes."""
    out = []
    for dims, kind in zip(_dims(args), _types(args)):
        if kind == "TensorList":
            out += [(d, 4) for d in dims if isinstance(d, list)]
        elif kind in ELEMENT_BYTES and isinstance(dims, list) and all(isinstance(d, int) for d in dims):
            out.append((dims, ELEMENT_BYTES[kind]))
    return out


def _nbytes(dims, size):
    return _prod(dims) * size


def _broadcast(shapes):
    rank = max((len(s) for s in shapes), default=0)
    out = [1] * rank
    for s in shapes:
        for i, d in enumerate(s):
            j = rank - len(s) + i
            out[j] = max(out[j], int(d))
    return out


def _pair(value, n, default):
    if value is None:
        return [default] * n
    if isinstance(value, (int, float)):
        return [int(value)] * n
    value = list(value)
    return value * n if len(value) == 1 else value


def _conv_forward(name, args):
    dims = _dims(args)
    if len(dims) < 2 or len(dims[0]) < 3 or len(dims[1]) < 3:
        return None
    x, w = dims[0], dims[1]
    s_i, p_i, d_i, t_i, g_i = CONV_FORWARD[name]
    n_sp = len(x) - 2
    kernel = w[2:]
    groups = _concrete(args, g_i) or 1
    if t_i is not None and _concrete(args, t_i):  # transposed: weight is [Cin, Cout/groups, k...]
        return 2 * x[0] * x[1] * _prod(x[2:]) * w[1] * _prod(kernel)
    stride = _pair(_concrete(args, s_i), n_sp, 1)
    dilation = _pair(_concrete(args, d_i), n_sp, 1)
    padding = _concrete(args, p_i)
    if isinstance(padding, str) or padding is None:  # "same" (or unknown): the output keeps the input size
        out = [-(-x[2 + i] // stride[i]) for i in range(n_sp)]
    else:
        padding = _pair(padding, n_sp, 0)
        out = [(x[2 + i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1 for i in range(n_sp)]
    return 2 * x[0] * w[0] * _prod(out) * w[1] * _prod(kernel)


def _conv_backward(args):
    dims = _dims(args)
    if len(dims) < 3 or len(dims[0]) < 3 or len(dims[2]) < 3:
        return None
    grad_out, w = dims[0], dims[2]
    if _concrete(args, 7):  # transposed: grad_output is the bigger side
        base = 2 * dims[1][0] * dims[1][1] * _prod(dims[1][2:]) * w[1] * _prod(w[2:])
    else:
        base = 2 * grad_out[0] * grad_out[1] * _prod(grad_out[2:]) * w[1] * _prod(w[2:])
    mask = _concrete(args, 10)
    mask = list(mask) if isinstance(mask, (list, tuple)) and len(mask) == 3 else [True, True, False]
    return base * mask[0] + base * mask[1] + _prod(grad_out) * mask[2]


def _matmul(name, args):
    dims = [d for d in _dims(args) if isinstance(d, list)]
    if name in ("addmm", "_addmm_activation", "baddbmm", "addmv", "addbmm"):
        dims = dims[1:]
    if len(dims) < 2:
        return None
    a, b = dims[0], dims[1]
    if name == "linear":  # weight [N, K]
        return 2 * _prod(a[:-1]) * a[-1] * b[0] if a and len(b) == 2 else None
    if not a or not b:
        return None
    if len(b) == 1:  # matrix-vector
        return 2 * _prod(a)
    if len(a) == 1:
        return 2 * _prod(b)
    batch = _prod(_broadcast([a[:-2], b[:-2]])) if name != "addbmm" else a[0]
    return 2 * batch * a[-2] * a[-1] * b[-1]


def _rnn_layer(args, backward):
    dims = _dims(args)
    if len(dims) < 3 or len(dims[1]) != 2 or len(dims[2]) != 2:
        return None
    tokens = _prod(dims[0][:-1])  # T*N whatever the layout
    forward = 2 * tokens * (dims[1][0] * dims[1][1] + dims[2][0] * dims[2][1])
    return 2 * forward if backward else forward


def _flash_attention(args, backward):
    dims = _dims(args)
    q, k = (dims[1], dims[2]) if backward else (dims[0], dims[1])
    if len(q) != 4 or len(k) != 4:
        return None
    forward = 4 * q[0] * q[1] * q[2] * k[2] * q[3]
    return forward * 5 // 2 if backward else forward


def flops(name, args):
    if name in CONV_FORWARD:
        return _conv_forward(name, args)
    if name == "convolution_backward":
        return _conv_backward(args)
    if name in ("mm", "addmm", "_addmm_activation", "bmm", "baddbmm", "addbmm", "matmul", "linear", "mv", "addmv"):
        return _matmul(name, args)
    if name in ("mkldnn_rnn_layer", "mkldnn_rnn_layer_backward"):
        return _rnn_layer(args, name.endswith("backward"))
    if name.startswith("_scaled_dot_product_flash_attention_for_cpu"):
        return _flash_attention(args, name.endswith("backward"))
    return None


def _pool_out(x, args):
    n_sp = 2
    kernel = _pair(_concrete(args, 1), n_sp, 1)
    stride = _concrete(args, 2)
    stride = kernel if not stride else _pair(stride, n_sp, 1)
    padding = _pair(_concrete(args, 3), n_sp, 0)
    dilation = _pair(_concrete(args, 4), n_sp, 1)
    ceil = bool(_concrete(args, 5))
    out = []
    for i in range(n_sp):
        span = x[-2 + i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1
        out.append((-(-span // stride[i]) if ceil else span // stride[i]) + 1)
    return list(x[:-2]) + out


def _elementwise(tensors):
    out = _broadcast([d for d, _ in tensors])
    return sum(_nbytes(d, s) for d, s in tensors) + _prod(out) * tensors[0][1]


def _special_bytes(name, args, tensors):
    """Bytes of the operators with their own rule (None: not one of them)."""
    first = _nbytes(*tensors[0])
    if name == "copy_":
        return sum(_nbytes(d, s) for d, s in tensors[:2])
    if name in ("fill_", "zero_"):
        return first
    if name in ("clone", "_to_copy"):
        return 2 * first
    if name in ("cat", "stack"):
        return 2 * sum(_nbytes(d, s) for d, s in tensors)
    if name == "max_pool2d_with_indices":
        return first + _prod(_pool_out(tensors[0][0], args)) * (tensors[0][1] + 8)
    if name == "max_pool2d_with_indices_backward":  # grad_output, self, ..., indices
        return first + 2 * _nbytes(*tensors[1]) + (_nbytes(*tensors[2]) if len(tensors) > 2 else 0)
    if name == "native_batch_norm":
        return first * (3 if _concrete(args, 5) is not False else 2)
    if name == "native_batch_norm_backward":
        mask = _concrete(args, 9)
        return first * (5 if not isinstance(mask, (list, tuple)) or mask[0] else 2)
    if name == "native_layer_norm":
        return 2 * first
    if name == "native_layer_norm_backward":
        return 3 * first
    if name in ("_fused_adamw_", "_fused_adam_"):  # params, grads, exp_avgs, exp_avg_sqs, ...
        lists = [d for d, k in zip(_dims(args), _types(args)) if k == "TensorList"]
        return 7 * sum(_prod(d) * 4 for d in (lists[0] if lists else []) if isinstance(d, list))
    if name.startswith("_foreach_") or name == "_amp_foreach_non_finite_check_and_unscale_":
        lists = [d for d, k in zip(_dims(args), _types(args)) if k == "TensorList"]
        read = sum(_prod(d) * 4 for d in (lists[0] if lists else []) if isinstance(d, list))
        return read if name == "_foreach_norm" else 2 * read
    return None


def nbytes(name, args):
    tensors = _tensors(args)
    if not tensors:
        return None
    special = _special_bytes(name, args, tensors)
    if special is not None:
        return special
    if name in REDUCTIONS:
        return sum(_nbytes(d, s) for d, s in tensors)
    if name in ELEMENTWISE:
        return _elementwise(tensors)
    return None


def work(name, args):
    """("flop", n), ("byte", n) or None for one operator event (name with or without "aten::")."""
    short = name[6:] if name.startswith("aten::") else name
    if name in HPCTRAIN_BYTES:
        tensors = _tensors(args)
        total = sum(f * _nbytes(*t) for f, t in zip(HPCTRAIN_BYTES[name], tensors))
        return ("byte", int(total)) if tensors else None
    if not name.startswith("aten::"):
        return None
    try:
        n = flops(short, args)
        if n is not None:
            return ("flop", int(n))
        n = nbytes(short, args)
        return ("byte", int(n)) if n is not None else None
    except (TypeError, ValueError, IndexError):
        return None
