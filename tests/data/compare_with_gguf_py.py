"""Checks that files our writer made open in llama.cpp's `gguf` Python package (gguf-py, whose
gguf-dump is llama.cpp's dump tool) and that it sees what our reader sees: version, every key
with its type (and array element type/length), every tensor's name, type, shape and offset.

    python compare_with_gguf_py.py GGUF_TOOLS_BINARY FILE.gguf...
"""
import json
import subprocess
import sys

from gguf import GGUFReader, GGUFValueType

tool, files = sys.argv[1], sys.argv[2:]
assert files, "no files given"
failures = 0
for path in files:
    ours = json.loads(subprocess.check_output([tool, "inspect", "--json", path]))
    r = GGUFReader(path)
    theirs = []
    for name, field in r.fields.items():
        if name.startswith("GGUF."):
            continue
        entry = {"key": name, "type": field.types[0].name}
        if field.types[0] == GGUFValueType.ARRAY:
            # parts[3] and parts[4] (after key length, key, type) are the array's own element type and length: gguf-py lists
            # element types only for non-empty arrays and flattens nested ones in `data`.
            entry["elem_type"] = GGUFValueType(int(field.parts[3][0])).name
            entry["len"] = int(field.parts[4][0])
        theirs.append(entry)
    mine = [{k: m[k] for k in ("key", "type", "elem_type", "len") if k in m} for m in ours["metadata"]]
    problems = []
    if mine != theirs:
        problems.append(f"metadata differs:\n ours   {mine}\n gguf-py {theirs}")
    if int(r.fields["GGUF.version"].parts[-1][0]) != ours["version"]:
        problems.append("version differs")
    their_tensors = [{"name": t.name, "type": t.tensor_type.name, "shape": [int(x) for x in t.shape],
                      "offset": int(t.data_offset), "bytes": int(t.n_bytes)} for t in r.tensors]
    my_tensors = [{"name": t["name"], "type": t["type"], "shape": t["shape"], "offset": t["offset"],
                   "bytes": t["bytes"]} for t in ours["tensors"]]
    if my_tensors != their_tensors:
        problems.append(f"tensors differ:\n ours    {my_tensors}\n gguf-py {their_tensors}")
    status = "ok" if not problems else "FAILED"
    print(f"{status}: {path}: {len(mine)} keys, {len(my_tensors)} tensors")
    for p in problems:
        print("   ", p)
    failures += bool(problems)
print(f"gguf-py: {len(files) - failures} passed, {failures} failed")
sys.exit(1 if failures else 0)
