"""Renders each template here with transformers' `apply_chat_template` on a few conversations and
writes `expected.json`, the strings tests/chat_templates.rs compares llava-edge's Jinja rendering
with. Run with the reference venv (tests/reference/README.md):

    /work/.venv-ref/bin/python tests/data/chat_templates/make_expected.py

The templates are the strings the models ship (SOURCES.md); nothing here is hand-written output.
"""
import json
import os

import transformers
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))

# template -> (bos, eos, how messages carry their content: a list of typed parts, as the llava-hf
# processors pass them, or a plain string with the media placeholders written into it)
TEMPLATES = {
    "llava-1.5-hf": ("<s>", "</s>", "parts"),
    "llava-v1.6-mistral-hf": ("<s>", "</s>", "parts"),
    "llama3-llava-next-8b-hf": ("<|begin_of_text|>", "<|eot_id|>", "parts"),
    "llava-onevision-qwen2-hf": (None, "<|im_end|>", "parts"),
    "llava-next-video-vicuna-hf": ("<s>", "</s>", "parts"),
    "llava-next-video-34b-yi-hf": ("<|startoftext|>", "<|endoftext|>", "parts"),
    "meta-llama-3-8b-instruct": ("<|begin_of_text|>", "<|eot_id|>", "string"),
    "mistral-7b-instruct-v0.2": ("<s>", "</s>", "string"),
}

# Conversations as llava-edge describes them: (system, [(role, images, videos, text)]).
CONVERSATIONS = {
    "one_image": (None, [("user", 1, 0, "What is shown in this image?")]),
    "system": ("You are a helpful assistant.", [("user", 1, 0, "Describe it.")]),
    "two_turns": (None, [("user", 1, 0, "What is this?"), ("assistant", 0, 0, "A cat."),
                         ("user", 0, 0, "And its colour?")]),
    "two_images": (None, [("user", 2, 0, "Compare them.")]),
    "text_only": (None, [("user", 0, 0, "Hello")]),
    "video": (None, [("user", 0, 1, "What happens?")]),
}
# Templates that refuse a system message (raise_exception): llava-edge folds the system prompt into
# the first user message, "SYSTEM\n\nTEXT", and the reference is rendered from that folded form.
NO_SYSTEM_ROLE = {"mistral-7b-instruct-v0.2"}
# Only templates that place video parts are given the video conversation.
VIDEO = {"llava-onevision-qwen2-hf"}


def messages(system, turns, mode, fold_system):
    out = []
    if system is not None and fold_system:
        role, n_img, n_vid, text = turns[0]
        turns = [(role, n_img, n_vid, system + "\n\n" + text)] + list(turns[1:])
        system = None
    if system is not None:
        out.append({"role": "system",
                    "content": [{"type": "text", "text": system}] if mode == "parts" else system})
    for role, n_img, n_vid, text in turns:
        if mode == "parts":
            content = [{"type": "image"}] * n_img + [{"type": "video"}] * n_vid + [{"type": "text", "text": text}]
        else:
            content = "<image>\n" * n_img + "<video>\n" * n_vid + text
        out.append({"role": role, "content": content})
    return out


def tokenizer(bos, eos):
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"x": 0}, unk_token="x")))
    specials = {}
    if bos is not None:
        specials["bos_token"] = bos
    if eos is not None:
        specials["eos_token"] = eos
    tok.add_special_tokens(specials)
    return tok


def main():
    out = {"transformers": transformers.__version__, "templates": {}}
    for name, (bos, eos, mode) in TEMPLATES.items():
        with open(os.path.join(HERE, name + ".jinja")) as f:
            template = f.read()
        tok = tokenizer(bos, eos)
        cases = {}
        for cname, (system, turns) in CONVERSATIONS.items():
            if cname == "video" and name not in VIDEO:
                continue
            msgs = messages(system, turns, mode, name in NO_SYSTEM_ROLE)
            rendered = tok.apply_chat_template(msgs, chat_template=template, tokenize=False,
                                               add_generation_prompt=True)
            cases[cname] = {
                "system": system,
                "messages": [{"role": r, "images": i, "videos": v, "text": t} for r, i, v, t in turns],
                "expected": rendered,
            }
        out["templates"][name] = {"file": name + ".jinja", "bos_token": bos, "eos_token": eos,
                                  "content": mode, "system_folded": name in NO_SYSTEM_ROLE, "cases": cases}
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(out, f, indent=1, sort_keys=True, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
