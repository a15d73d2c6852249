"""Writes gguf_py_vectors.json: blocks of each type of issue 11 decoded by gguf-py's numpy
implementation (`gguf.quants`, an independent port of ggml's dequantizers by ggml's
maintainers), and f32 rows quantized by it for the types it can quantize. The Rust test
`kernels/tests/gguf_py_vectors.rs` checks this crate against them.

Run: python3 -m venv V && V/bin/pip install gguf==<version> numpy && V/bin/python this.py
(the version used is recorded in the output). Not run by CI; the JSON is checked in.
"""

import json
import random
from importlib.metadata import version

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

rng = random.Random(11)

# (type, byte offsets of the f16 scale fields in a block)
SCALES = {
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
    T.IQ4_NL: [0],
    T.IQ4_XS: [0],
}


def f16_bytes(v):
    return np.array([v], dtype=np.float16).tobytes()


def blocks(t, n):
    block_size, type_size = quants.GGML_QUANT_SIZES[t]
    out = bytearray()
    for _ in range(n):
        b = bytearray(rng.getrandbits(8) for _ in range(type_size))
        for o in SCALES[t]:
            b[o:o + 2] = f16_bytes(rng.choice([1, -1]) * rng.uniform(0.001, 0.05))
        out += b
    return bytes(out)


cases = []
for t in SCALES:
    data = blocks(t, 3)
    values = quants.dequantize(np.frombuffer(data, dtype=np.uint8), t).astype(np.float32)
    cases.append({"type": t.name, "bytes": data.hex(), "values": [float(v) for v in values]})

quantized = []
for t in [T.BF16, T.Q5_0, T.Q5_1]:
    n = 32 * 8
    x = np.array([rng.uniform(-1, 1) * 2.0 ** rng.randint(-8, 4) for _ in range(n)], dtype=np.float32)
    x[5] = 0.0
    try:
        q = quants.quantize(x, t)
    except Exception as e:  # a gguf-py without this quantizer
        print(f"skip {t.name}: {e}")
        continue
    quantized.append({"type": t.name, "input": [float(v) for v in x], "bytes": q.tobytes().hex()})

json.dump(
    {"gguf_version": version("gguf"), "numpy_version": version("numpy"), "dequantized": cases, "quantized": quantized},
    open("gguf_py_vectors.json", "w"),
    indent=0,
)
print("wrote", len(cases), "dequantized and", len(quantized), "quantized cases")
