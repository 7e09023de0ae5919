#!/usr/bin/env python3
"""safetensors helpers for scripts/gpu-check*.sh with only torch installed (no `safetensors` package).

  subset IN OUT new=old ...   copies tensors `old` of IN into OUT under the names `new`
  compare GOT WANT KEY ATOL   max |GOT[cam] - WANT[KEY]|; exit 1 above ATOL
"""
import json
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "F64": torch.float64, "U8": torch.uint8, "I64": torch.int64}
NAMES = {v: k for k, v in DTYPES.items()}


def read(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        t = torch.frombuffer(bytearray(data[a:b]), dtype=DTYPES[meta["dtype"]])
        out[name] = t.reshape(meta["shape"])
    return out


def write(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        raw = t.contiguous().numpy().tobytes()
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    cmd = sys.argv[1]
    if cmd == "subset":
        src = read(sys.argv[2])
        pairs = [a.split("=", 1) for a in sys.argv[4:]]
        write(sys.argv[3], {new: src[old] for new, old in pairs})
    elif cmd == "compare":
        got, want = read(sys.argv[2])["cam"], read(sys.argv[3])[sys.argv[4]]
        atol = float(sys.argv[5])
        d = (got.double() - want.double()).abs().max().item()
        print(f"max |cam - reference {sys.argv[4]}| = {d:.3e} (atol {atol:.0e})")
        sys.exit(0 if d <= atol else 1)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
