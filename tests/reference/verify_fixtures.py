#!/usr/bin/env python3
"""Check committed fixtures without regenerating them.

1. every file listed in MANIFEST.json exists with the recorded sha256, and no file is unlisted;
2. every .npy is a version-1.0 header, little-endian '<f4' or '<i8', C order (what the Rust reader supports);
3. each case's hf/ checkpoint, reloaded with transformers, reproduces the stored logits, image/video
   features and greedy tokens from the stored input_ids / pixel_values (so the checkpoint and
   the reference tensors belong together).

Usage:  /work/.venv-ref/bin/python tests/reference/verify_fixtures.py [--dir tests/fixtures]
"""
import argparse
import hashlib
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import torch
import transformers

torch.set_num_threads(1)


def check_npy(path):
    with open(path, "rb") as f:
        major, minor = np.lib.format.read_magic(f)
        assert (major, minor) == (1, 0), (path, major, minor)
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    assert not fortran, path
    assert dtype.str in ("<f4", "<i8"), (path, dtype.str)
    return shape, dtype.str


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=os.path.join(here, "..", "fixtures"))
    root = os.path.abspath(ap.parse_args().dir)

    man = json.load(open(os.path.join(root, "MANIFEST.json")))["files"]
    seen = set()
    for dp, _, fns in os.walk(root):
        for fn in fns:
            rel = os.path.relpath(os.path.join(dp, fn), root).replace(os.sep, "/")
            if rel != "MANIFEST.json":
                seen.add(rel)
    assert seen == set(man), ("unlisted", sorted(seen - set(man)), "missing", sorted(set(man) - seen))
    for rel, info in man.items():
        data = open(os.path.join(root, rel), "rb").read()
        assert hashlib.sha256(data).hexdigest() == info["sha256"], rel
        if rel.endswith(".npy"):
            check_npy(os.path.join(root, rel))
    print(f"manifest: {len(man)} files ok; all .npy are v1.0 little-endian f4/i8 C-order")

    worst = 0.0
    for case in sorted(os.listdir(root)):
        cj = os.path.join(root, case, "case.json")
        if not os.path.exists(cj):
            continue
        info = json.load(open(cj))
        cls = getattr(transformers, info["model_class"])
        model = cls.from_pretrained(os.path.join(root, case, "hf"), attn_implementation="eager",
                                    dtype=torch.float32).eval()
        model.generation_config.eos_token_id = None
        for fx in sorted(info["fixtures"]):
            d = os.path.join(root, case, fx)
            ld = lambda n: torch.from_numpy(np.load(os.path.join(d, n + ".npy")))
            meta = json.load(open(os.path.join(d, "meta.json")))
            kw = {"input_ids": ld("input_ids")[None], "attention_mask": ld("attention_mask")[None]}
            for n in ("pixel_values", "image_sizes", "pixel_values_videos"):
                if n in meta["arrays"]:
                    kw[n] = ld(n)
            if "batch_num_images" in meta:
                kw["batch_num_images"] = torch.tensor(meta["batch_num_images"])
            with torch.no_grad():
                out = model(**kw)
                gen = model.generate(**kw, max_new_tokens=8, do_sample=False, eos_token_id=None,
                                     pad_token_id=info["tokenizer"]["pad_token_id"])
            diff = float((out.logits[0] - ld("logits")).abs().max())
            worst = max(worst, diff)
            assert diff <= 1e-5, (case, fx, diff)
            assert gen[0, kw["input_ids"].shape[1]:].tolist() == ld("generated_ids").tolist(), (case, fx)
            if "image_features" in meta["arrays"]:
                f = torch.cat(list(out.image_outputs.pooler_output), 0)
                assert torch.allclose(f, ld("image_features"), atol=1e-5, rtol=0), (case, fx)
            if "vision_features" in meta["arrays"] and "pixel_values" in meta["arrays"]:
                # which vision hidden state is used: CLIP -> hidden_states[-2] (index 0 = embeddings after
                # pre_layrnorm), SigLIP -> hidden_states[-1]; post_layernorm is never applied
                pv = kw["pixel_values"]
                if pv.dim() == 5:
                    pv = pv[:, :1].flatten(0, 1) if meta["kind"] == "multi_image" else pv[0]
                with torch.no_grad():
                    vo = model.model.vision_tower(pv, output_hidden_states=True)
                hs = vo.hidden_states[info["vision_feature_layer"]]
                if info["vision_feature_select_strategy"] == "default":
                    hs = hs[:, 1:]
                assert torch.equal(hs, ld("vision_features")), (case, fx)
                assert not torch.allclose(vo.last_hidden_state[:, -hs.shape[1]:], hs), (case, fx)
            print(f"  {case}/{fx}: logits max|diff| {diff:.2e}, greedy tokens equal")
    print(f"all fixtures reproduce (worst logits diff {worst:.2e})")


if __name__ == "__main__":
    sys.exit(main())
