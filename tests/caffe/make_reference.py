"""Write tests/caffe/reference/ with real pycaffe (run by scripts/caffe_reference.sh).

Runs under the chroot's python3 with Debian's pycaffe (BVLC Caffe), not under gristmill: each case
is a small net (prototxt below), random weights set through ``net.params`` and saved by pycaffe's
``Net.save`` as a .caffemodel, random inputs, one forward. ``reference.npz`` holds, per case, the
inputs and every blob the prototxt names (Caffe's own split blobs left out) as ``case/blob``;
tests/caffe/test_reference.py runs the same files through ``gristmill.caffe.Net`` and compares.

    python3 make_reference.py OUT_DIR
"""

import os
import sys

import numpy as np

import caffe

REDUCTIONS = [(op, axis, coeff) for op in ("SUM", "ASUM", "SUMSQ", "MEAN")
              for axis, coeff in ((0, -1.0), (1, 0.5), (-1, 2.0))]

CASES = {
    "argmax": ("x4: 2 3 4 5\nx2: 3 10", "\n".join([
        'layer { name: "am4" type: "ArgMax" bottom: "x4" top: "am4" }',
        'layer { name: "am4_k3v" type: "ArgMax" bottom: "x4" top: "am4_k3v" '
        'argmax_param { top_k: 3 out_max_val: true } }',
        'layer { name: "am4_k2" type: "ArgMax" bottom: "x4" top: "am4_k2" '
        'argmax_param { top_k: 2 } }',
        'layer { name: "am2" type: "ArgMax" bottom: "x2" top: "am2" }',
        'layer { name: "am2_v" type: "ArgMax" bottom: "x2" top: "am2_v" '
        'argmax_param { out_max_val: true } }',
        'layer { name: "am2_k4v" type: "ArgMax" bottom: "x2" top: "am2_k4v" '
        'argmax_param { top_k: 4 out_max_val: true } }',
        'layer { name: "ax1_k2" type: "ArgMax" bottom: "x4" top: "ax1_k2" '
        'argmax_param { axis: 1 top_k: 2 } }',
        'layer { name: "ax3_v" type: "ArgMax" bottom: "x4" top: "ax3_v" '
        'argmax_param { axis: -1 top_k: 2 out_max_val: true } }',
        'layer { name: "ax1_2d" type: "ArgMax" bottom: "x2" top: "ax1_2d" '
        'argmax_param { axis: 1 } }',
    ])),
    "reduction": ("x: 2 3 2 3", "\n".join(
        ['layer { name: "r_default" type: "Reduction" bottom: "x" top: "r_default" }'] + [
            f'layer {{ name: "r_{op}_{axis}" type: "Reduction" bottom: "x" top: "r_{op}_{axis}" '
            f'reduction_param {{ operation: {op} axis: {axis} coeff: {coeff} }} }}'
            for op, axis, coeff in REDUCTIONS])),
    "shapes": ("x: 2 6 4 5\nref: 1 2 3 3", "\n".join([
        'layer { name: "sl" type: "Slice" bottom: "x" top: "sl0" top: "sl1" top: "sl2" '
        'slice_param { axis: 1 slice_point: 2 slice_point: 4 } }',
        'layer { name: "sl_even" type: "Slice" bottom: "x" top: "se0" top: "se1" '
        'slice_param { axis: -1 slice_point: 2 } }',
        'layer { name: "cat" type: "Concat" bottom: "sl2" bottom: "sl0" top: "cat" }',
        'layer { name: "crop1" type: "Crop" bottom: "x" bottom: "ref" top: "crop1" '
        'crop_param { axis: 2 offset: 1 } }',
        'layer { name: "crop2" type: "Crop" bottom: "x" bottom: "ref" top: "crop2" '
        'crop_param { axis: 1 offset: 3 offset: 1 offset: 2 } }',
        'layer { name: "rs" type: "Reshape" bottom: "x" top: "rs" '
        'reshape_param { shape { dim: 0 dim: -1 dim: 10 } } }',
        'layer { name: "rs_axis" type: "Reshape" bottom: "x" top: "rs_axis" '
        'reshape_param { shape { dim: 3 dim: -1 } axis: 1 num_axes: 1 } }',
        'layer { name: "rs_end" type: "Reshape" bottom: "x" top: "rs_end" '
        'reshape_param { shape { dim: 1 dim: 1 } axis: -1 num_axes: 0 } }',
        'layer { name: "fl" type: "Flatten" bottom: "x" top: "fl" }',
        'layer { name: "fl_axis" type: "Flatten" bottom: "x" top: "fl_axis" '
        'flatten_param { axis: 2 } }',
        'layer { name: "fl_end" type: "Flatten" bottom: "x" top: "fl_end" '
        'flatten_param { axis: 1 end_axis: -2 } }',
        'layer { name: "sum" type: "Eltwise" bottom: "sl0" bottom: "sl1" bottom: "sl2" '
        'top: "sum" eltwise_param { operation: SUM coeff: 0.5 coeff: -2 coeff: 3 } }',
        'layer { name: "prod" type: "Eltwise" bottom: "sl0" bottom: "sl1" top: "prod" '
        'eltwise_param { operation: PROD } }',
        'layer { name: "emax" type: "Eltwise" bottom: "sl1" bottom: "sl2" top: "emax" '
        'eltwise_param { operation: MAX } }',
        'layer { name: "tile" type: "Tile" bottom: "ref" top: "tile" '
        'tile_param { axis: -2 tiles: 3 } }',
        'layer { name: "sm" type: "Softmax" bottom: "x" top: "sm" softmax_param { axis: 2 } }',
    ])),
    "pointwise": ("x: 2 3 4 5", "\n".join([
        'layer { name: "pow" type: "Power" bottom: "x" top: "pow" '
        'power_param { power: 2 scale: 0.5 shift: 1 } }',
        'layer { name: "exp" type: "Exp" bottom: "x" top: "exp" '
        'exp_param { base: 2 scale: 0.5 shift: 0.1 } }',
        'layer { name: "abs" type: "AbsVal" bottom: "x" top: "abs" }',
        'layer { name: "log" type: "Log" bottom: "abs" top: "log" '
        'log_param { base: 10 scale: 2 shift: 1 } }',
        'layer { name: "bnll" type: "BNLL" bottom: "x" top: "bnll" }',
        'layer { name: "elu" type: "ELU" bottom: "x" top: "elu" elu_param { alpha: 0.7 } }',
        'layer { name: "thr" type: "Threshold" bottom: "x" top: "thr" '
        'threshold_param { threshold: 0.2 } }',
        'layer { name: "leaky" type: "ReLU" bottom: "x" top: "leaky" '
        'relu_param { negative_slope: 0.1 } }',
        'layer { name: "mvn" type: "MVN" bottom: "x" top: "mvn" }',
        'layer { name: "mvn_across" type: "MVN" bottom: "x" top: "mvn_across" '
        'mvn_param { across_channels: true normalize_variance: false } }',
        'layer { name: "prelu" type: "PReLU" bottom: "x" top: "prelu" }',
        'layer { name: "scale" type: "Scale" bottom: "x" top: "scale" '
        'scale_param { axis: 1 num_axes: 2 bias_term: true } }',
        'layer { name: "bias" type: "Bias" bottom: "x" top: "bias" bias_param { axis: -1 } }',
        'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" '
        'inner_product_param { num_output: 3 axis: 2 } }',
        'layer { name: "ip_t" type: "InnerProduct" bottom: "x" top: "ip_t" '
        'inner_product_param { num_output: 4 transpose: true } }',
    ])),
    "spatial": ("x: 2 4 7 6", "\n".join([
        'layer { name: "conv" type: "Convolution" bottom: "x" top: "conv" '
        'convolution_param { num_output: 6 kernel_size: 3 pad: 1 stride: 2 group: 2 } }',
        'layer { name: "conv_dil" type: "Convolution" bottom: "x" top: "conv_dil" '
        'convolution_param { num_output: 2 kernel_h: 3 kernel_w: 2 dilation: 2 pad_w: 1 } }',
        'layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }',
        'layer { name: "bn_scale" type: "Scale" bottom: "conv" top: "conv" '
        'scale_param { bias_term: true } }',
        'layer { name: "deconv" type: "Deconvolution" bottom: "x" top: "deconv" '
        'convolution_param { num_output: 4 kernel_size: 4 stride: 2 pad: 1 group: 2 } }',
        'layer { name: "maxpool" type: "Pooling" bottom: "x" top: "maxpool" '
        'pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }',
        'layer { name: "avepool" type: "Pooling" bottom: "x" top: "avepool" '
        'pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 2 } }',
        'layer { name: "gpool" type: "Pooling" bottom: "x" top: "gpool" '
        'pooling_param { pool: AVE global_pooling: true } }',
        'layer { name: "lrn" type: "LRN" bottom: "x" top: "lrn" '
        'lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 } }',
        'layer { name: "lrn_within" type: "LRN" bottom: "x" top: "lrn_within" '
        'lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL } }',
    ])),
    # "name: dims | n": integer values below n (indices), not normal noise
    "misc": ("x: 2 4 5 6\ns: 4 5\nidx: 2 3 | 5\nbatch: 3 | 2", "\n".join([
        'layer { name: "scale2" type: "Scale" bottom: "x" bottom: "s" top: "scale2" }',
        'layer { name: "bias2" type: "Bias" bottom: "x" bottom: "s" top: "bias2" }',
        'layer { name: "bn_batch" type: "BatchNorm" bottom: "x" top: "bn_batch" '
        'batch_norm_param { use_global_stats: false } }',
        'layer { name: "spp" type: "SPP" bottom: "x" top: "spp" spp_param { pyramid_height: 2 } }',
        'layer { name: "im2col" type: "Im2col" bottom: "x" top: "im2col" '
        'convolution_param { kernel_size: 3 stride: 2 pad: 1 } }',
        'layer { name: "embed" type: "Embed" bottom: "idx" top: "embed" '
        'embed_param { num_output: 3 input_dim: 5 } }',
        'layer { name: "reindex" type: "BatchReindex" bottom: "x" bottom: "batch" '
        'top: "reindex" }',
        'layer { name: "dummy" type: "DummyData" top: "dummy" '
        'dummy_data_param { shape { dim: 2 dim: 3 } data_filler { value: 0.5 } } }',
        'layer { name: "param" type: "Parameter" top: "param" '
        'parameter_param { shape { dim: 2 dim: 3 } } }',
        'layer { name: "cat_last" type: "Concat" bottom: "dummy" bottom: "param" '
        'top: "cat_last" concat_param { axis: -1 } }',
        'layer { name: "sm" type: "Softmax" bottom: "x" top: "sm" }',
        'layer { name: "drop" type: "Dropout" bottom: "x" top: "drop" }',
        'layer { name: "am3" type: "ArgMax" bottom: "embed" top: "am3" '
        'argmax_param { top_k: 2 out_max_val: true } }',
        'layer { name: "r2" type: "Reduction" bottom: "cat_last" top: "r2" '
        'reduction_param { operation: ASUM axis: 1 coeff: -3 } }',
        'layer { name: "quiet" type: "Silence" bottom: "reindex" }',
    ])),
}


def prototxt(name, inputs, layers):
    lines = [f'name: "{name}"']
    for line in inputs.splitlines():
        blob, dims = line.split(":")
        dims = dims.split("|")[0]
        shape = " ".join(f"dim: {d}" for d in dims.split())
        lines.append(f'layer {{ name: "{blob}" type: "Input" top: "{blob}" '
                     f'input_param {{ shape {{ {shape} }} }} }}')
    return "\n".join(lines) + "\n" + layers + "\n"


def fill(net, rng):
    for layer, blobs in net.params.items():
        kind = net.layer_dict[layer].type
        for i, blob in enumerate(blobs):
            shape = blob.data.shape
            if kind == "BatchNorm":  # mean, variance, scale factor (not 1: its division counts)
                values = [rng.standard_normal(shape), rng.uniform(0.5, 2.0, shape),
                          np.full(shape, 2.0)][i]
            else:
                values = rng.standard_normal(shape)
            blob.data[...] = values


def named_blobs(text):
    names = []
    for token in text.split('top: "')[1:]:
        names.append(token.split('"')[0])
    return list(dict.fromkeys(names))


def main(out):
    os.makedirs(out, exist_ok=True)
    caffe.set_mode_cpu()
    rng = np.random.RandomState(20240601)
    arrays = {}
    for name, (inputs, layers) in CASES.items():
        text = prototxt(name, inputs, layers)
        path = os.path.join(out, name + ".prototxt")
        with open(path, "w") as f:
            f.write(text)
        net = caffe.Net(path, caffe.TEST)
        fill(net, rng)
        if net.params:
            net.save(os.path.join(out, name + ".caffemodel"))
        below = {line.split(":")[0]: int(line.split("|")[1])
                 for line in inputs.splitlines() if "|" in line}
        for blob in net.inputs:
            shape = net.blobs[blob].data.shape
            net.blobs[blob].data[...] = (rng.randint(0, below[blob], shape) if blob in below
                                         else rng.standard_normal(shape))
        net.forward()
        for blob in named_blobs(text):
            arrays[f"{name}/{blob}"] = np.array(net.blobs[blob].data, dtype=np.float32)
        print(name, {b: net.blobs[b].data.shape for b in named_blobs(text)})
    np.savez_compressed(os.path.join(out, "reference.npz"), **arrays)


if __name__ == "__main__":
    main(sys.argv[1])
