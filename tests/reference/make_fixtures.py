#!/usr/bin/env python3
"""llava-edge reference fixture generator (Hugging Face transformers is the reference).

Builds tiny random-weight LLaVA-family checkpoints from configs alone (no hub access), saves
them the way `save_pretrained` does (with hub-style tensor names), runs the real transformers
processors and models on deterministic test images / prompts, and writes every intermediate
the Rust runtime must reproduce as little-endian C-order .npy files (f32 / i64 only).

Cases (see tests/reference/README.md for the full description and file layout):
  llava_v1             original LLaVA stand-in: CLIP (56 px tile, "224-style") + Llama, single linear
                       projector, expressed through LlavaForConditionalGeneration (see README)
  llava15              LLaVA-1.5: CLIP (70 px tile, "336-style") + Llama, MLP projector
  llava_next_mistral   LLaVA-NeXT: CLIP + Mistral, anyres + unpad + image_newline
  llava_next_vicuna    LLaVA-NeXT: CLIP + Vicuna-style Llama
  llava_ov             LLaVA-OneVision: SigLIP + Qwen2, anyres_max_9 (+ bilinear shrink),
                       multi-image and 4-frame video
  llava15_tokjson, llava_next_vicuna_tokjson
                       the LLaVA-1.5 / NeXT-Vicuna models saved with tokenizer.json only (no
                       tokenizer.model), questions that need byte-fallback pieces

Usage:  /work/.venv-ref/bin/python tests/reference/make_fixtures.py [--out tests/fixtures]
The output directory is wiped (only the entries this script writes) and fully regenerated;
two runs give byte-identical files (MANIFEST.json lists their sha256).
"""
import argparse
import hashlib
import json
import math
import os
import random
import re
import shutil
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import transformers
from transformers import (
    CLIPImageProcessor,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessor,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionImageProcessorPil,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
    LlavaProcessor,
    MistralConfig,
    Qwen2Config,
    Qwen2Tokenizer,
    SiglipVisionConfig,
)
from transformers.image_processing_utils import select_best_resolution
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling

SEED = 1234
VOCAB = 512      # text vocab_size (padded past the tokenizer's 480-486 entries, like real checkpoints)
PATCH = 14
TILE = 70        # LLaVA-1.5 / NeXT / OneVision vision image_size (stands for 336 / 384): 5x5 = 25 patches
TILE_V1 = 56     # original-LLaVA vision image_size (stands for 224): 4x4 = 16 patches
N_GEN = 8
SEED_OV_MIXED = 18

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


# ==============================================================================================
# deterministic inputs
# ==============================================================================================
WORDS = (
    "the a an image picture photo shows contains describe what is in this of and with red green blue "
    "yellow circle square triangle gradient background left right top bottom color shape large small "
    "there are two three one user assistant please answer question short long dark light center corner "
    "cat dog house tree sky sun water road car person hello world how many objects do you see system "
    "helpful you are INST USER ASSISTANT What Describe The This Is How There chat between curious human "
    "artificial intelligence gives detailed polite answers to human's questions video happens different "
    "these images frame moving"
).split()


def make_corpus(n=4000, seed=0):
    r = random.Random(seed)
    out = []
    for _ in range(n):
        k = r.randint(3, 14)
        s = " ".join(r.choice(WORDS) for _ in range(k))
        s = s[0].upper() + s[1:] + r.choice([".", "?", "!", ",", ":"])
        if r.random() < 0.2:
            s += " " + str(r.randint(0, 9999))
        if r.random() < 0.1:
            s = "USER: " + s + " ASSISTANT:"
        if r.random() < 0.05:
            s = "[INST] " + s + " [/INST]"
        out.append(s)
    return out


def make_image(width, height, shift=0.0):
    """Deterministic RGB test image (uint8 HWC): gradients + hard-edged shapes.
    `shift` (fraction of the width) moves the disc, for video frames."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.zeros((height, width, 3), np.float64)
    img[..., 0] = 255.0 * x / max(width - 1, 1)
    img[..., 1] = 255.0 * y / max(height - 1, 1)
    img[..., 2] = 127.5 + 127.5 * np.sin(2 * np.pi * (x + 2 * y) / (0.7 * width))
    cx, cy, r = (0.3 + shift) * width, 0.45 * height, 0.22 * min(width, height)
    img[(x - cx) ** 2 + (y - cy) ** 2 <= r * r] = (230, 20, 20)                       # red disc
    sx0, sy0, s = int(0.6 * width), int(0.15 * height), int(0.3 * min(width, height))
    img[sy0:sy0 + s, sx0:sx0 + s] = (20, 40, 220)                                       # blue square
    tri = (y >= 0.65 * height) & (y <= 0.95 * height) & (np.abs(x - 0.75 * width) <= (y - 0.65 * height) * 0.8)
    img[tri] = (240, 220, 30)                                                           # yellow triangle
    img[:, int(0.5 * width):int(0.5 * width) + 2] = 0                                   # black stripe
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


# name -> (width, height)
IMAGES = {
    "sq180": (180, 180),         # square
    "wide200x110": (200, 110),   # wide
    "tall110x200": (110, 200),   # tall
    "wide260x120": (260, 120),   # very wide (NeXT picks the 1x3 pinpoint)
    "tall120x260": (120, 260),   # very tall (NeXT picks the 3x1 pinpoint)
    "small100x60": (100, 60),    # smaller than one pinpoint: upscaled
    "wide300x200": (300, 200),   # OneVision: 3x5 tiles, unpad 25->23 columns, then bilinear shrink (ratio 1.238)
    "wide250x100": (250, 100),   # llava_ov_mixed: 2.5:1, padded to a square in a multi-image prompt
    "tall100x220": (100, 220),   # llava_ov_mixed: 1:2.2
    "tiny20x12": (20, 12),       # llava_ov_mixed: smaller than one vision patch
    "wide231x100": (231, 100),   # llava_ov_mixed: odd padding (65 above, 66 below)
    "tall97x212": (97, 212),     # llava_ov_mixed: odd padding (57 left, 58 right)
}
VIDEO = ("video4_96x72", 96, 72, 4)   # name, width, height, frames (the red disc moves right)


# ==============================================================================================
# tokenizers (trained offline, deterministic)
# ==============================================================================================
def build_sp_tokenizer(workdir):
    """SentencePiece BPE (byte_fallback) -> transformers LlamaTokenizer (tokenizers backend).
    Returns (tokenizer, path of the trained tokenizer.model)."""
    import sentencepiece as spm

    prefix = os.path.join(workdir, "tokenizer")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(make_corpus()), model_prefix=prefix, vocab_size=480,
        model_type="bpe", byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1, add_dummy_prefix=True, split_digits=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, minloglevel=2,
    )
    # the trainer records the (temporary) output path in trainer_spec.model_prefix: normalise it so the
    # file is byte-identical from run to run
    from sentencepiece import sentencepiece_model_pb2
    mp = sentencepiece_model_pb2.ModelProto()
    with open(prefix + ".model", "rb") as f:
        mp.ParseFromString(f.read())
    mp.trainer_spec.model_prefix = "tokenizer"
    with open(prefix + ".model", "wb") as f:
        f.write(mp.SerializeToString())
    tok = LlamaTokenizer.from_pretrained(workdir, add_bos_token=True, add_eos_token=False, legacy=False)
    tok.add_special_tokens({"pad_token": "<pad>"})
    tok.add_tokens(["<image>"], special_tokens=True)
    return tok, prefix + ".model"


def build_qwen_tokenizer():
    """Byte-level BPE trained with `tokenizers` using Qwen2's pre-tokenizer -> Qwen2Tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    t = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    t.normalizer = normalizers.NFC()
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    t.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=480, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"])
    t.train_from_iterator(make_corpus(), trainer=trainer)
    m = json.loads(t.to_str())["model"]
    merges = [tuple(p) if isinstance(p, list) else tuple(p.split(" ")) for p in m["merges"]]
    tok = Qwen2Tokenizer(vocab=m["vocab"], merges=merges, unk_token=None, eos_token="<|im_end|>",
                         pad_token="<|endoftext|>", bos_token=None)
    tok.add_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"], special_tokens=True)
    return tok


# ==============================================================================================
# chat templates (shapes of the real llava-hf templates; content-list messages)
# ==============================================================================================
VICUNA_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the human's questions.")
# LLaVA-1.5 (llava-hf/llava-1.5-*): "USER: <image>\n... ASSISTANT:"
USER_ASSISTANT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'][0]['text'] + ' ' }}"
    "{% else %}{{ message['role'].upper() + ': ' }}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ '<image>\n' }}{% endif %}{% endfor %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] + ' ' }}{% endif %}{% endfor %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
# LLaVA-NeXT Mistral (llava-hf/llava-v1.6-mistral-7b-hf): "[INST] <image>\n... [/INST]"
MISTRAL_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ '<image>\n' }}{% endif %}{% endfor %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{{ ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ ' ' + c['text'] + '</s>' }}{% endif %}{% endfor %}"
    "{% endif %}{% endfor %}"
)
# LLaVA-OneVision (llava-hf/llava-onevision-qwen2-*): ChatML
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ '<image>\n' }}{% endif %}{% endfor %}"
    "{% for c in message['content'] %}{% if c['type'] == 'video' %}{{ '<video>\n' }}{% endif %}{% endfor %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def conversation(n_images=0, video=False, text="What is shown in this image?", system=None):
    content = [{"type": "image"} for _ in range(n_images)]
    if video:
        content.append({"type": "video"})
    content.append({"type": "text", "text": text})
    msgs = [{"role": "user", "content": content}]
    if system:
        msgs.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
    return msgs


# ==============================================================================================
# weights: every parameter re-initialised at O(1) scale so logits are far from uniform
# (HF's default init_range=0.02 gives near-uniform logits and a fragile argmax).
# ==============================================================================================
@torch.no_grad()
def reinit_(model, seed):
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():   # deterministic order
        shape = p.shape
        leaf = name.split(".")[-1]
        lname = name.lower()
        if p.dim() == 1 and ("norm" in lname or "layrnorm" in lname) and leaf == "weight":
            v = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif leaf == "bias":
            v = 0.05 * torch.randn(shape, generator=g)
        elif "image_newline" in name or "class_embedding" in name or "position_embedding" in name:
            v = 0.5 * torch.randn(shape, generator=g)
        elif "embed_tokens" in name:
            v = 0.1 * torch.randn(shape, generator=g)   # small text embeddings, as in real LLMs
        elif p.dim() >= 2:
            v = torch.randn(shape, generator=g) / np.sqrt(int(np.prod(shape[1:])))
        else:
            v = 0.1 * torch.randn(shape, generator=g)
        p.copy_(v.to(p.dtype))


# ==============================================================================================
# model builders: return (model class, config, processor, PIL-backend image processor or None, notes)
# ==============================================================================================
def clip_vision(tile):
    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                            image_size=tile, patch_size=PATCH, num_channels=3, hidden_act="quick_gelu",
                            layer_norm_eps=1e-5, projection_dim=32)


def llama_text(tok, rope_theta=10000.0):
    return LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                       rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
                       hidden_act="silu", tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                       pad_token_id=tok.pad_token_id)


def clip_processors(tile):
    kw = dict(size={"shortest_edge": tile}, crop_size={"height": tile, "width": tile}, do_center_crop=True,
              do_resize=True, resample=PILImageResampling.BICUBIC, image_mean=OPENAI_CLIP_MEAN,
              image_std=OPENAI_CLIP_STD, do_convert_rgb=True)
    return CLIPImageProcessor(**kw), CLIPImageProcessorPil(**kw)


def build_llava_v1(tok):
    """Original LLaVA (v1, CLIP-224 + one nn.Linear projector). transformers' LlavaMultiModalProjector is
    always linear_1 -> act -> linear_2, so the single linear projector is expressed exactly as
    projector_hidden_act="linear" (identity) with linear_2 = identity matrix and zero bias
    (set in `post_init_weights`). The generator asserts the projector output equals
    F.linear(x, linear_1.weight, linear_1.bias) bit for bit."""
    n_img = (TILE_V1 // PATCH) ** 2
    cfg = LlavaConfig(vision_config=clip_vision(TILE_V1), text_config=llama_text(tok),
                      image_token_index=tok.convert_tokens_to_ids("<image>"), image_seq_length=n_img,
                      projector_hidden_act="linear", vision_feature_layer=-2,
                      vision_feature_select_strategy="default", tie_word_embeddings=False)
    ip, ip_pil = clip_processors(TILE_V1)
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=PATCH, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, chat_template=USER_ASSISTANT_TEMPLATE, image_token="<image>")
    return LlavaForConditionalGeneration, cfg, proc, ip_pil


def build_llava15(tok):
    n_img = (TILE // PATCH) ** 2
    cfg = LlavaConfig(vision_config=clip_vision(TILE), text_config=llama_text(tok),
                      image_token_index=tok.convert_tokens_to_ids("<image>"), image_seq_length=n_img,
                      projector_hidden_act="gelu", vision_feature_layer=-2, vision_feature_select_strategy="default",
                      tie_word_embeddings=False)
    ip, ip_pil = clip_processors(TILE)
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=PATCH, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, chat_template=USER_ASSISTANT_TEMPLATE, image_token="<image>")
    return LlavaForConditionalGeneration, cfg, proc, ip_pil


def next_pinpoints():
    # llava-v1.6: [[336,672],[672,336],[672,672],[1008,336],[336,1008]] (h, w), scaled 336 -> TILE
    return [[TILE, 2 * TILE], [2 * TILE, TILE], [2 * TILE, 2 * TILE], [3 * TILE, TILE], [TILE, 3 * TILE]]


def _build_llava_next(tok, text, template):
    cfg = LlavaNextConfig(vision_config=clip_vision(TILE), text_config=text,
                          image_token_index=tok.convert_tokens_to_ids("<image>"), projector_hidden_act="gelu",
                          vision_feature_layer=-2, vision_feature_select_strategy="default",
                          image_grid_pinpoints=next_pinpoints(), image_seq_length=(TILE // PATCH) ** 2,
                          tie_word_embeddings=False)
    kw = dict(size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE}, do_center_crop=True,
              image_grid_pinpoints=next_pinpoints(), resample=PILImageResampling.BICUBIC,
              image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD, do_pad=True, do_convert_rgb=True)
    proc = LlavaNextProcessor(image_processor=LlavaNextImageProcessor(**kw), tokenizer=tok, patch_size=PATCH,
                              vision_feature_select_strategy="default", num_additional_image_tokens=1,
                              chat_template=template, image_token="<image>")
    return LlavaNextForConditionalGeneration, cfg, proc, LlavaNextImageProcessorPil(**kw)


def build_llava_next_mistral(tok):
    text = MistralConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                         sliding_window=None, hidden_act="silu", tie_word_embeddings=False, bos_token_id=1,
                         eos_token_id=2, pad_token_id=tok.pad_token_id)
    return _build_llava_next(tok, text, MISTRAL_TEMPLATE)


def build_llava_next_vicuna(tok):
    return _build_llava_next(tok, llama_text(tok), USER_ASSISTANT_TEMPLATE)


def ov_pinpoints():
    # llava-onevision: 384 * {1..6} x 384 * {1..6} (h, w), scaled 384 -> TILE
    return [[TILE * i, TILE * j] for i in range(1, 7) for j in range(1, 7)]


def build_llava_ov(tok):
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                image_size=TILE, patch_size=PATCH, num_channels=3, hidden_act="gelu_pytorch_tanh",
                                layer_norm_eps=1e-6, vision_use_head=False)
    text = Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, rms_norm_eps=1e-6,
                       rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, hidden_act="silu",
                       use_sliding_window=False, tie_word_embeddings=True,
                       bos_token_id=None, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                       pad_token_id=tok.pad_token_id)
    cfg = LlavaOnevisionConfig(vision_config=vision, text_config=text,
                               image_token_index=tok.convert_tokens_to_ids("<image>"),
                               video_token_index=tok.convert_tokens_to_ids("<video>"), projector_hidden_act="gelu",
                               vision_feature_layer=-1, vision_feature_select_strategy="full",
                               vision_aspect_ratio="anyres_max_9", image_grid_pinpoints=ov_pinpoints(),
                               tie_word_embeddings=True)
    kw = dict(size={"height": TILE, "width": TILE}, image_grid_pinpoints=ov_pinpoints(),
              resample=PILImageResampling.BICUBIC, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
              do_pad=True, do_convert_rgb=True)
    vp = LlavaOnevisionVideoProcessor(size={"height": TILE, "width": TILE}, resample=PILImageResampling.BICUBIC,
                                      image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], do_sample_frames=False)
    proc = LlavaOnevisionProcessor(image_processor=LlavaOnevisionImageProcessor(**kw), tokenizer=tok,
                                   video_processor=vp, num_image_tokens=(TILE // PATCH) ** 2,
                                   vision_feature_select_strategy="full", chat_template=CHATML_TEMPLATE,
                                   image_token="<image>", video_token="<video>", vision_aspect_ratio="anyres_max_9")
    return LlavaOnevisionForConditionalGeneration, cfg, proc, LlavaOnevisionImageProcessorPil(**kw)


# ==============================================================================================
# case table
# ==============================================================================================
# fixture spec: (folder name, kind, payload); kind in {"text", "image", "multi_image", "video"}
CASES = [
    dict(name="llava_v1", builder=build_llava_v1, tokenizer="sp", system=VICUNA_SYSTEM, linear_projector=True,
         family="llava", pil_fixture="sq180", fixtures=[("text_only", "text", None)] +
         [(n, "image", n) for n in ("sq180", "wide200x110", "tall110x200")]),
    dict(name="llava15", builder=build_llava15, tokenizer="sp", system=None, family="llava", pil_fixture="sq180",
         fixtures=[("text_only", "text", None)] + [(n, "image", n) for n in ("sq180", "wide200x110", "tall110x200")]),
    dict(name="llava_next_mistral", builder=build_llava_next_mistral, tokenizer="sp", system=None, family="next",
         pil_fixture="sq180",
         fixtures=[("text_only", "text", None)] +
         [(n, "image", n) for n in ("sq180", "wide200x110", "tall110x200", "wide260x120", "tall120x260",
                                    "small100x60")]),
    dict(name="llava_next_vicuna", builder=build_llava_next_vicuna, tokenizer="sp", system=VICUNA_SYSTEM,
         family="next", pil_fixture="wide260x120",
         fixtures=[("text_only", "text", None)] +
         [(n, "image", n) for n in ("sq180", "wide260x120", "tall120x260")]),
    dict(name="llava_ov", builder=build_llava_ov, tokenizer="qwen", system=None, family="ov", pil_fixture="small100x60",
         fixtures=[("text_only", "text", None)] +
         [(n, "image", n) for n in ("sq180", "wide200x110", "tall110x200", "small100x60", "wide300x200")] +
         [("two_images", "multi_image", ("small100x60", "tall110x200")),
          ("video4", "video", VIDEO[0])]),
    # Several images of different shapes in one OneVision prompt (each is padded to a square with the
    # mean colour, not squashed), alone for comparison, in both orders, three sizes, tiny with big,
    # odd padding amounts (which side gets the extra row or column).
    # Its own seed: llava_ov's weights answer every image prompt with token 0, which hides wrong rows.
    dict(name="llava_ov_mixed", builder=build_llava_ov, tokenizer="qwen", system=None, family="ov", seed=SEED_OV_MIXED,
         pil_fixture="wide_tall",
         fixtures=[(n, "image", n) for n in ("wide250x100", "tall100x220")] +
         [("wide_tall", "multi_image", ("wide250x100", "tall100x220")),
          ("tall_wide", "multi_image", ("tall100x220", "wide250x100")),
          ("three_sizes", "multi_image", ("small100x60", "wide300x200", "tall100x220")),
          ("tiny_big", "multi_image", ("tiny20x12", "wide300x200")),
          ("odd_pads", "multi_image", ("wide231x100", "tall97x212"))]),
]
PROMPT_TEXT = {"text": "Describe a red circle on a blue background.", "image": "What is shown in this image?",
               "multi_image": "What is different between these images?", "video": "What happens in this video?"}
# Checkpoints saved as transformers 5 saves a LLaMA tokenizer: tokenizer.json only (BPE with byte_fallback,
# Metaspace), no tokenizer.model, so a converter must rebuild the SentencePiece vocabulary from it. Their
# questions need byte-fallback pieces (accents, CJK, an emoji: the corpus is ASCII) and runs of spaces.
TOKJSON_PROMPTS = {"text": "D\u00e9cris un caf\u00e9 \u2615 pr\u00e8s de \u6771\u4eac  tower, with  two spaces.",
                   "image": "Qu'y a-t-il sur cette image ? \u65e5\u672c\u8a9e  ok"}
CASES += [
    dict(name="llava15_tokjson", builder=build_llava15, tokenizer="sp", tokenizer_json_only=True, system=None,
         family="llava", pil_fixture="sq180", prompt_text=TOKJSON_PROMPTS,
         fixtures=[("text_only", "text", None), ("sq180", "image", "sq180")]),
    dict(name="llava_next_vicuna_tokjson", builder=build_llava_next_vicuna, tokenizer="sp", tokenizer_json_only=True,
         system=VICUNA_SYSTEM, family="next", pil_fixture="wide260x120", prompt_text=TOKJSON_PROMPTS,
         fixtures=[("text_only", "text", None), ("wide260x120", "image", "wide260x120")]),
]


# ==============================================================================================
# helpers
# ==============================================================================================
def to_np(t):
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def save_npy(d, name, arr):
    arr = np.ascontiguousarray(to_np(arr))
    if arr.dtype == np.float64 or arr.dtype == np.float16:
        raise TypeError(f"{name}: unexpected dtype {arr.dtype}")
    if arr.dtype == np.bool_ or arr.dtype == np.int32:
        arr = arr.astype(np.int64)
    assert arr.dtype in (np.float32, np.int64), (name, arr.dtype)
    arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    np.save(os.path.join(d, name + ".npy"), arr, allow_pickle=False)
    return {"shape": list(arr.shape), "dtype": arr.dtype.str}


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")


def relabel_like_hub(path):
    """transformers 5.x saves `vision_tower.encoder...` (no `vision_model.` level); the llava-hf hub
    checkpoints use `vision_tower.vision_model.encoder...`. Rewrite the file with hub-style names,
    sorted (transformers loads both; the reload in `run_case` checks it)."""
    from safetensors.torch import load_file, save_file
    sd = load_file(path)
    out = {}
    for k, v in sd.items():
        if k.startswith("vision_tower.") and not k.startswith("vision_tower.vision_model."):
            k = "vision_tower.vision_model." + k[len("vision_tower."):]
        out[k] = v.contiguous()
    save_file(dict(sorted(out.items())), path, metadata={"format": "pt"})


def anyres_arithmetic(h, w, pinpoints, tile, patch, max_num=None):
    """Independent re-statement of the anyres token arithmetic (checked against transformers'
    actual feature count). Returns a dict of the intermediate sizes."""
    bh, bw = select_best_resolution([h, w], pinpoints)
    gh, gw = bh // tile, bw // tile
    p = tile // patch
    ch, cw = gh * p, gw * p
    if w / h > cw / ch:
        new_h = int(round(h * (cw / w), 7))
        pad = (ch - new_h) // 2
        uh, uw, axis = ch - 2 * pad, cw, "rows"
    else:
        new_w = int(round(w * (ch / h), 7))
        pad = (cw - new_w) // 2
        uh, uw, axis = ch, cw - 2 * pad, "cols"
    out = {"best_resolution_hw": [bh, bw], "tile_grid_hw": [gh, gw], "feature_grid_hw": [ch, cw],
           "unpad_axis": axis, "unpad_each_side": pad, "unpadded_hw": [uh, uw]}
    fh, fw = uh, uw
    if max_num is not None:
        ratio = math.sqrt(uh * uw / (max_num * p * p))
        out["shrink_ratio"] = ratio
        out["shrunk"] = ratio > 1.1
        if ratio > 1.1:
            fh, fw = int(uh // ratio), int(uw // ratio)
    out["final_hw"] = [fh, fw]
    out["num_tiles_incl_base"] = gh * gw + 1
    out["num_tokens"] = p * p + fh * (fw + 1)
    return out


def repack_reference(proj_tiles, image_size_hw, pinpoints, tile, patch, newline, max_num=None):
    """Independent re-statement of LLaVA-NeXT / OneVision feature packing for one image, from the
    per-tile projector output [1 + gh*gw, p*p, D] (base tile first). Used only to *check* that the
    recipe documented in the README reproduces transformers' packed features exactly."""
    p = tile // patch
    h, w = image_size_hw
    ar = anyres_arithmetic(h, w, pinpoints, tile, patch, max_num)
    gh, gw = ar["tile_grid_hw"]
    base, tiles = proj_tiles[0], proj_tiles[1:]
    d = tiles.shape[-1]
    grid = tiles.reshape(gh, gw, p, p, d).permute(0, 2, 1, 3, 4).reshape(gh * p, gw * p, d)   # [H, W, D]
    pad = ar["unpad_each_side"]
    if ar["unpad_axis"] == "rows":
        grid = grid[pad:grid.shape[0] - pad]
    else:
        grid = grid[:, pad:grid.shape[1] - pad]
    if max_num is not None and ar["shrunk"]:
        fh, fw = ar["final_hw"]
        grid = F.interpolate(grid.permute(2, 0, 1)[None], size=[fh, fw], mode="bilinear", align_corners=False,
                             antialias=False)[0].permute(1, 2, 0)
    grid = torch.cat([grid, newline[None, None, :].expand(grid.shape[0], 1, d)], 1)            # newline column
    return torch.cat([base, grid.reshape(-1, d)], 0)


def load_png(path):
    with Image.open(path) as im:
        im.load()
        return im.convert("RGB")


# ==============================================================================================
# one case
# ==============================================================================================
@torch.no_grad()
def run_case(case, tok, sp_model_path, out, img_dir):
    name = case["name"]
    cls, cfg, proc, ip_pil = case["builder"](tok)
    torch.manual_seed(SEED)
    model = cls._from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    reinit_(model, case.get("seed", SEED))
    if case.get("linear_projector"):
        pj = model.model.multi_modal_projector
        pj.linear_2.weight.copy_(torch.eye(pj.linear_2.weight.shape[0]))
        pj.linear_2.bias.zero_()
    model.eval()

    cdir = os.path.join(out, name)
    hf = os.path.join(cdir, "hf")
    os.makedirs(hf)
    model.generation_config.do_sample = False
    model.save_pretrained(hf)
    proc.save_pretrained(hf)
    relabel_like_hub(os.path.join(hf, "model.safetensors"))
    if sp_model_path is not None and not case.get("tokenizer_json_only"):
        shutil.copyfile(sp_model_path, os.path.join(hf, "tokenizer.model"))
    if case.get("tokenizer_json_only"):
        assert not os.path.exists(os.path.join(hf, "tokenizer.model")), "save_pretrained wrote tokenizer.model"

    # everything below uses the artefacts reloaded from disk (proves the save/load round trip)
    proc = type(proc).from_pretrained(hf)
    model2 = cls.from_pretrained(hf, attn_implementation="eager", dtype=torch.float32).eval()
    sd1, sd2 = model.state_dict(), model2.state_dict()
    assert list(sd1) == list(sd2)
    for k in sd1:
        assert torch.equal(sd1[k], sd2[k]), k
    model = model2
    model.generation_config.eos_token_id = None     # pure greedy, never stop early
    model.generation_config.pad_token_id = proc.tokenizer.pad_token_id
    tok = proc.tokenizer

    from safetensors import safe_open
    tensors = {}
    with safe_open(os.path.join(hf, "model.safetensors"), "pt") as f:
        for k in sorted(f.keys()):
            t = f.get_tensor(k)
            tensors[k] = {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}

    # hooks: selected vision layer (projector input) and projector output; vision tower hidden states
    cap = {}
    mm = model.model
    hooks = [
        mm.multi_modal_projector.register_forward_hook(
            lambda m, i, o: cap.update(proj_in=i[0].detach().clone(), proj_out=o.detach().clone())),
        mm.vision_tower.register_forward_hook(
            lambda m, i, o: cap.update(vision_hidden=tuple(None if h is None else h.detach().clone() for h in o.hidden_states))),
    ]

    vc, tc = cfg.vision_config, cfg.text_config
    feature_layer = cfg.vision_feature_layer
    strategy = cfg.vision_feature_select_strategy
    case_info = {
        "case": name,
        "model_class": cls.__name__, "processor_class": type(proc).__name__,
        "image_processor_class": type(proc.image_processor).__name__,
        "image_processor_pil_backend_class": type(ip_pil).__name__,
        "video_processor_class": type(proc.video_processor).__name__ if getattr(proc, "video_processor", None) else None,
        "tokenizer_class": type(tok).__name__,
        "vision_model_type": vc.model_type, "text_model_type": tc.model_type,
        "vision": {"image_size": vc.image_size, "patch_size": vc.patch_size, "hidden_size": vc.hidden_size,
                   "num_hidden_layers": vc.num_hidden_layers, "num_attention_heads": vc.num_attention_heads,
                   "intermediate_size": vc.intermediate_size, "hidden_act": vc.hidden_act,
                   "layer_norm_eps": vc.layer_norm_eps,
                   "patches_per_tile": (vc.image_size // vc.patch_size) ** 2,
                   "has_cls_token": vc.model_type == "clip_vision_model"},
        "text": {"hidden_size": tc.hidden_size, "num_hidden_layers": tc.num_hidden_layers,
                 "num_attention_heads": tc.num_attention_heads, "num_key_value_heads": tc.num_key_value_heads,
                 "head_dim": getattr(tc, "head_dim", tc.hidden_size // tc.num_attention_heads),
                 "intermediate_size": tc.intermediate_size, "vocab_size": tc.vocab_size,
                 "rms_norm_eps": tc.rms_norm_eps, "rope_theta": tc.rope_parameters["rope_theta"],
                 "hidden_act": tc.hidden_act, "tie_word_embeddings": bool(cfg.tie_word_embeddings),
                 "attention_bias": bool(getattr(tc, "attention_bias", tc.model_type == "qwen2"))},
        "vision_feature_layer": feature_layer,
        "vision_feature_select_strategy": strategy,
        "projector_hidden_act": cfg.projector_hidden_act,
        "projector_kind": "linear (linear_2 == identity, see README)" if case.get("linear_projector") else "mlp2x_gelu",
        "image_grid_pinpoints_hw": getattr(cfg, "image_grid_pinpoints", None),
        "vision_aspect_ratio": getattr(cfg, "vision_aspect_ratio", None),
        "image_token_id": int(cfg.image_token_id),
        "video_token_id": int(cfg.video_token_id) if hasattr(cfg, "video_token_id") else None,
        "tokenizer": {"len": len(tok), "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                      "pad_token_id": tok.pad_token_id,
                      "has_sentencepiece_model": os.path.exists(os.path.join(hf, "tokenizer.model"))},
        "chat_template": proc.chat_template,
        "n_params": sum(p.numel() for p in model.parameters()),
        "safetensors_tensors": tensors,
        "fixtures": {},
    }
    if case.get("linear_projector"):
        case_info["notes"] = (
            "Original LLaVA used a single nn.Linear projector (mm_projector). transformers' LLaVA projector is "
            "always linear_1 -> act -> linear_2, so this case sets projector_hidden_act='linear' (identity) and "
            "linear_2.weight = I, linear_2.bias = 0. Every fixture asserts projected_tiles == "
            "F.linear(vision_features, linear_1.weight, linear_1.bias) exactly. A single-linear runtime loads "
            "multi_modal_projector.linear_1.* and ignores linear_2.*. Tile 56 px (4x4 patches) stands for 224 px.")

    if case.get("tokenizer_json_only"):
        # Generated later than the other cases: the versions of this run, as versions.json keeps the others'.
        case_info["versions"] = {"transformers": transformers.__version__, "torch": torch.__version__,
                                 "tokenizers": __import__("tokenizers").__version__,
                                 "sentencepiece": __import__("sentencepiece").__version__}
    for fx_name, kind, payload in case["fixtures"]:
        d = os.path.join(cdir, fx_name)
        os.makedirs(d)
        arrays = {}
        meta = {"case": name, "fixture": fx_name, "kind": kind}
        conv = conversation(n_images=len(payload) if kind == "multi_image" else
                            {"text": 0, "image": 1, "video": 0}[kind],
                            video=kind == "video", text=case.get("prompt_text", PROMPT_TEXT)[kind],
                            system=case["system"])
        prompt = proc.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
        meta["prompt"] = prompt
        call = {"text": prompt, "return_tensors": "pt"}
        pils = []
        if kind == "image":
            pils = [load_png(os.path.join(img_dir, payload + ".png"))]
            call["images"] = pils[0]
            meta["images"] = ["images/" + payload + ".png"]
        elif kind == "multi_image":
            pils = [load_png(os.path.join(img_dir, n + ".png")) for n in payload]
            call["images"] = [pils]     # nested: one sample holding two images -> batch_num_images [2]
            meta["images"] = ["images/" + n + ".png" for n in payload]
        elif kind == "video":
            frames = sorted(fn for fn in os.listdir(img_dir) if fn.startswith(payload + "_frame"))
            video = np.stack([np.asarray(load_png(os.path.join(img_dir, fn))) for fn in frames])
            call["videos"] = [video]
            meta["video_frames"] = ["images/" + fn for fn in frames]
            meta["video_array_thwc"] = list(video.shape)
        if pils:
            meta["images_wh"] = [list(p.size) for p in pils]
        if kind == "text" and sp_model_path is not None:
            import sentencepiece as spm
            sp = spm.SentencePieceProcessor(model_file=sp_model_path)
            sp_ids = [sp.bos_id()] + sp.encode(prompt)
            hf_ids = tok(prompt)["input_ids"]
            meta["sentencepiece_model_ids"] = sp_ids
            meta["sentencepiece_model_agrees_with_tokenizer_json"] = sp_ids == hf_ids

        inputs = proc(**call)
        model_kw = {k: v for k, v in inputs.items()}
        ids = inputs["input_ids"]
        arrays["input_ids"] = save_npy(d, "input_ids", ids[0])
        arrays["attention_mask"] = save_npy(d, "attention_mask", inputs["attention_mask"][0])
        meta["seq_len"] = int(ids.shape[1])
        meta["text_with_media_tokens_collapsed"] = collapse(tok, ids[0], cfg)

        if "pixel_values" in inputs:
            pv = inputs["pixel_values"]
            arrays["pixel_values"] = save_npy(d, "pixel_values", pv)
            pil_pv = ip_pil(call["images"], return_tensors="pt")["pixel_values"]
            if pil_pv.shape == pv.shape:
                meta["pil_backend_vs_torchvision_pixel_max_abs_diff"] = float((pil_pv - pv).abs().max())
            else:
                meta["pil_backend_vs_torchvision_pixel_max_abs_diff"] = f"shape {list(pil_pv.shape)} vs {list(pv.shape)}"
            if case.get("pil_fixture") == fx_name:
                arrays["pixel_values_pil_backend"] = save_npy(d, "pixel_values_pil_backend", pil_pv)
        if "image_sizes" in inputs:
            arrays["image_sizes"] = save_npy(d, "image_sizes", inputs["image_sizes"])
            meta["image_sizes_hw"] = inputs["image_sizes"].tolist()
        if "batch_num_images" in inputs:
            meta["batch_num_images"] = inputs["batch_num_images"].tolist()
        if "pixel_values_videos" in inputs:
            arrays["pixel_values_videos"] = save_npy(d, "pixel_values_videos", inputs["pixel_values_videos"])

        # ---- full forward (prefill) ----
        cap.clear()
        outp = model(**model_kw, return_dict=True)
        logits = outp.logits[0]
        n_img_tok = int((ids == cfg.image_token_id).sum())
        n_vid_tok = int((ids == cfg.video_token_id).sum()) if hasattr(cfg, "video_token_id") else 0
        meta["num_image_tokens"] = n_img_tok
        meta["num_video_tokens"] = n_vid_tok
        meta["image_token_spans"] = token_spans(ids[0], cfg.image_token_id)
        if n_vid_tok:
            meta["video_token_spans"] = token_spans(ids[0], cfg.video_token_id)

        if kind in ("image", "multi_image"):
            packed = torch.cat(list(outp.image_outputs.pooler_output), 0)
            assert packed.shape[0] == n_img_tok, (packed.shape, n_img_tok)
            # the public API gives the same rows
            kw = {k: inputs[k] for k in ("image_sizes", "batch_num_images") if k in inputs}
            api = torch.cat(list(model.model.get_image_features(pixel_values=inputs["pixel_values"], **kw)
                                 .pooler_output), 0)
            assert torch.equal(api, packed)
            sel = cap["vision_hidden"][feature_layer]
            if strategy == "default":    # with CLS; for "full" it would equal vision_features
                arrays["vision_selected_layer"] = save_npy(d, "vision_selected_layer", sel)
            else:
                assert torch.equal(sel, cap["proj_in"])
            arrays["vision_features"] = save_npy(d, "vision_features", cap["proj_in"])
            arrays["projected_tiles"] = save_npy(d, "projected_tiles", cap["proj_out"])
            arrays["image_features"] = save_npy(d, "image_features", packed)
            meta["num_tiles_run_through_vision"] = int(cap["proj_in"].shape[0])
            per_img = [int(x.shape[0]) for x in outp.image_outputs.pooler_output]
            meta["image_tokens_per_image"] = per_img
            if case.get("linear_projector"):
                pj = model.model.multi_modal_projector
                ref = F.linear(cap["proj_in"], pj.linear_1.weight, pj.linear_1.bias)
                assert torch.equal(ref, cap["proj_out"]), float((ref - cap["proj_out"]).abs().max())
                meta["linear_projector_check"] = "projected_tiles == F.linear(vision_features, W1, b1) bit-exact"
            if case["family"] in ("next", "ov") and kind == "image":
                h, w = inputs["image_sizes"][0].tolist()
                ar = anyres_arithmetic(h, w, cfg.image_grid_pinpoints, vc.image_size, vc.patch_size,
                                       max_num=9 if case["family"] == "ov" else None)
                assert ar["num_tokens"] == n_img_tok, (ar, n_img_tok)
                assert ar["num_tiles_incl_base"] == meta["num_tiles_run_through_vision"], ar
                meta["anyres"] = ar
                rp = repack_reference(cap["proj_out"], (h, w), cfg.image_grid_pinpoints, vc.image_size,
                                      vc.patch_size, model.model.image_newline,
                                      max_num=9 if case["family"] == "ov" else None)
                meta["repack_recipe_max_abs_diff"] = float((rp - packed).abs().max())
                assert torch.allclose(rp, packed, atol=1e-6, rtol=0), meta["repack_recipe_max_abs_diff"]
            if kind == "multi_image":
                # OneVision multi-image: only the base tile of each image, each followed by image_newline
                nl = model.model.image_newline
                rp = torch.cat([torch.cat([t, nl[None]], 0) for t in cap["proj_out"]], 0)
                assert torch.equal(rp, packed)
                meta["multi_image_recipe"] = "per image: 25 base-tile rows + 1 image_newline row (no anyres)"
                # what transformers does with a *flat* image list for the same single prompt: each image is
                # treated as its own sample (batch_num_images [1, 1]) and gets the full anyres treatment
                flat = proc(text=prompt, images=pils, return_tensors="pt")
                meta["flat_list_variant"] = {
                    "note": "processor(images=[img1, img2]) instead of [[img1, img2]]; recorded, not a fixture",
                    "batch_num_images": flat["batch_num_images"].tolist(),
                    "pixel_values_shape": list(flat["pixel_values"].shape),
                    "num_image_tokens": int((flat["input_ids"] == cfg.image_token_id).sum())}
        elif kind == "video":
            vf = outp.video_outputs.pooler_output if getattr(outp, "video_outputs", None) is not None else None
            api = model.model.get_video_features(pixel_values_videos=inputs["pixel_values_videos"]).pooler_output
            api = api.reshape(-1, api.shape[-1])
            if vf is not None:
                assert torch.equal(vf.reshape(-1, vf.shape[-1]), api)
            assert api.shape[0] == n_vid_tok, (api.shape, n_vid_tok)
            sel = cap["vision_hidden"][feature_layer]
            if strategy == "default":    # with CLS; for "full" it would equal vision_features
                arrays["vision_selected_layer"] = save_npy(d, "vision_selected_layer", sel)
            else:
                assert torch.equal(sel, cap["proj_in"])
            arrays["vision_features"] = save_npy(d, "vision_features", cap["proj_in"])
            arrays["projected_tiles"] = save_npy(d, "projected_tiles", cap["proj_out"])
            pooled = model.model.apply_pooling(cap["proj_out"])
            q = math.ceil((vc.image_size // vc.patch_size) / 2)
            p_ = vc.image_size // vc.patch_size
            mine = F.interpolate(cap["proj_out"].reshape(-1, p_, p_, pooled.shape[-1]).permute(0, 3, 1, 2),
                                 size=[q, q], mode="bilinear", align_corners=False, antialias=False)
            assert torch.equal(mine.permute(0, 2, 3, 1).reshape(pooled.shape), pooled)
            assert torch.equal(pooled.reshape(-1, pooled.shape[-1]), api[:-1])
            assert torch.equal(api[-1], model.model.image_newline)
            arrays["video_pooled"] = save_npy(d, "video_pooled", pooled)
            arrays["video_features"] = save_npy(d, "video_features", api)
            p = vc.image_size // vc.patch_size
            q = math.ceil(p / 2)
            meta["video"] = {"frames": int(inputs["pixel_values_videos"].shape[1]), "patch_grid": [p, p],
                             "pooled_grid": [q, q], "tokens_per_frame": q * q,
                             "num_tokens": int(inputs["pixel_values_videos"].shape[1]) * q * q + 1}
            assert meta["video"]["num_tokens"] == n_vid_tok

        arrays["logits"] = save_npy(d, "logits", logits)
        arrays["logits_last"] = save_npy(d, "logits_last", logits[-1])

        # ---- greedy generation (KV cache) and a no-cache recompute check ----
        gen = model.generate(**model_kw, max_new_tokens=N_GEN, do_sample=False, eos_token_id=None,
                             pad_token_id=tok.pad_token_id, output_logits=True, return_dict_in_generate=True)
        new_tokens = gen.sequences[0, ids.shape[1]:]
        gen_logits = torch.stack([l[0] for l in gen.logits], 0)
        cur = ids
        manual, manual_logits = [], []
        extra = {k: v for k, v in model_kw.items() if k not in ("input_ids", "attention_mask")}
        for _ in range(N_GEN):
            lg = model(input_ids=cur, attention_mask=torch.ones_like(cur), use_cache=False, **extra).logits[0, -1]
            nxt = int(lg.argmax())
            manual.append(nxt)
            manual_logits.append(lg)
            cur = torch.cat([cur, torch.tensor([[nxt]])], 1)
        assert manual == new_tokens.tolist(), (manual, new_tokens.tolist())
        assert torch.allclose(gen_logits[0], logits[-1], atol=1e-5)
        arrays["generated_ids"] = save_npy(d, "generated_ids", new_tokens)
        arrays["generated_logits"] = save_npy(d, "generated_logits", gen_logits)
        top2 = torch.topk(gen_logits, 2, dim=-1).values
        meta["generated_ids"] = new_tokens.tolist()
        meta["generated_text"] = tok.decode(new_tokens)
        meta["generated_top2_gap_per_step"] = [round(float(x), 6) for x in (top2[:, 0] - top2[:, 1])]
        meta["kv_cache_vs_recompute_logits_max_abs_diff"] = float((torch.stack(manual_logits) - gen_logits).abs().max())
        meta["logits_abs_max"] = float(logits.abs().max())
        meta["arrays"] = arrays
        write_json(os.path.join(d, "meta.json"), meta)
        case_info["fixtures"][fx_name] = {k: meta[k] for k in ("kind", "seq_len", "num_image_tokens", "num_video_tokens",
                                                               "generated_ids") if k in meta}
        if "anyres" in meta:
            case_info["fixtures"][fx_name]["anyres"] = {k: meta["anyres"][k] for k in (
                "tile_grid_hw", "feature_grid_hw", "unpadded_hw", "final_hw")}
        print(f"  {name}/{fx_name}: seq {meta['seq_len']} image tokens {n_img_tok} video tokens {n_vid_tok} "
              f"gen {meta['generated_ids']}", flush=True)

    for h in hooks:
        h.remove()
    write_json(os.path.join(cdir, "case.json"), case_info)


def collapse(tok, ids, cfg):
    """Decoded prompt with runs of media tokens collapsed to `<image>*N` / `<video>*N`."""
    text = tok.decode(ids)
    for tid in (cfg.image_token_id, getattr(cfg, "video_token_id", None)):
        if tid is not None:
            t = tok.convert_ids_to_tokens(int(tid))
            text = re.sub(f"(?:{re.escape(t)})+", lambda m: f"{t}*{len(m.group(0)) // len(t)}", text)
    return text


def token_spans(ids, token_id):
    """[start, end) index ranges of the runs of `token_id` in a 1-D id tensor."""
    spans, start = [], None
    for i, t in enumerate(ids.tolist() + [None]):
        if t == token_id and start is None:
            start = i
        elif t != token_id and start is not None:
            spans.append([start, i])
            start = None
    return spans


# ==============================================================================================
def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(here, "..", "fixtures"))
    ap.add_argument("--cases", default="", help="comma-separated subset (default: all)")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    random.seed(SEED)

    cases = [c for c in CASES if not args.cases or c["name"] in args.cases.split(",")]
    os.makedirs(out, exist_ok=True)
    for entry in ["images", "MANIFEST.json", "versions.json"] + [c["name"] for c in cases]:
        p = os.path.join(out, entry)
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.remove(p)

    img_dir = os.path.join(out, "images")
    os.makedirs(img_dir)
    for n, (w, h) in IMAGES.items():
        Image.fromarray(make_image(w, h)).save(os.path.join(img_dir, n + ".png"), optimize=False)
    vname, vw, vh, vt = VIDEO
    for i in range(vt):
        Image.fromarray(make_image(vw, vh, shift=0.12 * i)).save(os.path.join(img_dir, f"{vname}_frame{i}.png"),
                                                                  optimize=False)

    tmp = tempfile.mkdtemp(prefix="llava_edge_tok_")
    try:
        sp_tok, sp_model = build_sp_tokenizer(tmp)
        qw_tok = build_qwen_tokenizer()
        for case in cases:
            print(case["name"], flush=True)
            if case["tokenizer"] == "sp":
                run_case(case, sp_tok, sp_model, out, img_dir)
            else:
                run_case(case, qw_tok, None, out, img_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    write_json(os.path.join(out, "versions.json"), {
        "python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
        "numpy": np.__version__, "tokenizers": __import__("tokenizers").__version__,
        "sentencepiece": __import__("sentencepiece").__version__, "pillow": Image.__version__,
        "safetensors": __import__("safetensors").__version__,
        "torchvision": __import__("torchvision").__version__,
    })

    files = {}
    for dp, dns, fns in os.walk(out):
        dns.sort()
        for fn in sorted(fns):
            p = os.path.join(dp, fn)
            rel = os.path.relpath(p, out).replace(os.sep, "/")
            if rel == "MANIFEST.json":
                continue
            with open(p, "rb") as f:
                data = f.read()
            files[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    write_json(os.path.join(out, "MANIFEST.json"), {"files": dict(sorted(files.items()))})
    print(f"wrote {len(files)} files, {sum(v['bytes'] for v in files.values())} bytes to {out}")


if __name__ == "__main__":
    main()
