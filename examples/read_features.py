"""Read a gristmill output with plain h5py: names, features, top ImageNet class, errors.

Usage: python examples/read_features.py OUT
"""

import sys

import h5py
import numpy as np

out = sys.argv[1] if len(sys.argv) > 1 else "demo-out"
with h5py.File(f"{out}/features.h5", "r") as f:
    names = f["names"].asstr()[()]
    features = f["features"][()]          # (N, 1280), rows aligned with names
    logits = f["logits"][()] if "logits" in f else None
    errors = f["errors"][()]              # (name, stage, message) per input that failed
    print(f"{len(names)} images, features {features.shape}, {len(errors)} errors")
    for i, name in enumerate(names):
        top = f"  class {int(np.argmax(logits[i]))}" if logits is not None else ""
        print(f"  {name:40s} |f|={np.linalg.norm(features[i]):7.2f}{top}")
