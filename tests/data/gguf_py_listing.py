"""Records how the `gguf` Python package (llama.cpp's gguf-py, from PyPI) reads GGUF files:
version, tensor count, and every metadata key with its type, array element type and length,
and scalar values. tests/gguf_vocab.rs compares our reader with this record.

    python3 -m venv /tmp/venv-gguf && /tmp/venv-gguf/bin/pip install gguf
    /tmp/venv-gguf/bin/python tests/data/gguf_py_listing.py ../shared/vocab/*.gguf > tests/data/vocab_gguf_py.json
"""
import json
import os
import sys

from gguf import GGUFReader, GGUFValueType


def value_of(field):
    t = field.types[0]
    if t == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")
    v = field.parts[field.data[0]][0]
    return bool(v) if t == GGUFValueType.BOOL else v.item()


def listing(path):
    r = GGUFReader(path)
    keys = []
    for name, field in r.fields.items():
        if name.startswith("GGUF."):  # gguf-py's pseudo-fields for the header
            continue
        entry = {"key": name, "type": field.types[0].name}
        if field.types[0] == GGUFValueType.ARRAY:
            entry["elem_type"] = field.types[1].name if len(field.types) > 1 else None
            entry["len"] = len(field.data)
            # First three and last elements, for arrays of scalars or strings.
            picks = field.data[:3] + field.data[-1:] if field.data else []
            if len(field.types) == 2 and field.types[1] != GGUFValueType.ARRAY:
                if field.types[1] == GGUFValueType.STRING:
                    entry["picks"] = [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in picks]
                else:
                    entry["picks"] = [field.parts[i][0].item() for i in picks]
        else:
            entry["value"] = value_of(field)
        keys.append(entry)
    version = int(r.fields["GGUF.version"].parts[-1][0])
    return {"file": os.path.basename(path), "version": version,
            "tensor_count": len(r.tensors), "kv_count": len(keys), "keys": keys}


print(json.dumps([listing(p) for p in sorted(sys.argv[1:])], indent=1))
