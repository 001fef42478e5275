"""`llava-edge serve` driven by the official `openai` Python client: text, image and streamed
chats against the tiny LLaVA-1.5 fixture (greedy tokens checked against transformers' through
the server's `return_tokens` extension), errors raised as the SDK's exception types, and the API
key. Loopback only; every server is stopped at the end.

Usage: python tests/server_openai.py TARGET_DIR   (TARGET_DIR holds llava-edge and gguf-tools)
"""

import base64
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

import openai

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
TEXT_Q = "Describe a red circle on a blue background."
IMAGE_Q = "What is shown in this image?"


def fixture_tokens(case):
    meta = json.loads((FIX / "llava15" / case / "meta.json").read_text())
    return meta["generated_ids"]


class Server:
    def __init__(self, bin_dir, model, mmproj, *extra):
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [str(bin_dir / "llava-edge"), "serve", "-m", model, "--mmproj", mmproj,
             "--port", "0", "--cache-type", "f32", "-t", "2", *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 120
        while True:
            self.log.seek(0)
            text = self.log.read().decode(errors="replace")
            m = re.search(r"listening on (http://\S+)", text)
            if m and "model loaded" in text:
                self.url = m.group(1)
                return
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError(f"server did not start:\n{text}")
            time.sleep(0.05)

    def client(self, key="none"):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, timeout=60, max_retries=0)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def image_part(name):
    data = base64.b64encode((FIX / "images" / name).read_bytes()).decode()
    return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok: {what}")


def main():
    target = pathlib.Path(sys.argv[1]).resolve()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="llava-edge-openai-"))
    model, mmproj = str(tmp / "llava15.gguf"), str(tmp / "llava15-mmproj.gguf")
    subprocess.run([str(target / "gguf-tools"), "convert", "--hf", str(FIX / "llava15" / "hf"),
                    "--out", model, "--mmproj", mmproj, "--type", "f32"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        passed = run(target, model, mmproj)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, 0 failed")


def run(target, model, mmproj):
    passed = 0
    s = Server(target, model, mmproj, "--parallel", "2")
    try:
        c = s.client()
        models = c.models.list()
        check(models.data[0].id == "llava15", "models.list names the model")
        passed += 1
        for case, content in [
            ("text_only", TEXT_Q),
            ("sq180", [image_part("sq180.png"), {"type": "text", "text": IMAGE_Q}]),
        ]:
            want = fixture_tokens(case)
            r = c.chat.completions.create(
                model="llava15", messages=[{"role": "user", "content": content}],
                max_tokens=len(want), temperature=0, extra_body={"return_tokens": True})
            check(r.model_extra["tokens"] == want, f"{case}: greedy tokens equal transformers'")
            check(r.choices[0].finish_reason == "length", f"{case}: finish_reason length")
            check(r.usage.completion_tokens == len(want), f"{case}: usage")
            chunks = list(c.chat.completions.create(
                model="llava15", messages=[{"role": "user", "content": content}],
                max_tokens=len(want), temperature=0, stream=True,
                stream_options={"include_usage": True}))
            text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
            check(text == r.choices[0].message.content, f"{case}: streamed text equals the whole reply")
            check(chunks[-1].usage.completion_tokens == len(want), f"{case}: streamed usage")
            passed += 5
        try:
            c.chat.completions.create(model="llava15", messages=[{"role": "wizard", "content": "x"}])
            check(False, "an unknown role is refused")
        except openai.BadRequestError as e:
            check("wizard" in str(e), "an unknown role is a BadRequestError naming it")
        passed += 1
        r = c.chat.completions.create(model="llava15", messages=[{"role": "user", "content": "hi"}],
                                      max_tokens=2)
        check(r.choices[0].message.role == "assistant", "the server answers after an error")
        passed += 1
    finally:
        s.stop()
    s = Server(target, model, mmproj, "--api-key", "sesame")
    try:
        try:
            s.client("wrong").models.list()
            check(False, "a wrong key is refused")
        except openai.AuthenticationError:
            check(True, "a wrong key is an AuthenticationError")
        check(s.client("sesame").models.list().data[0].id == "llava15", "the right key is let in")
        passed += 2
    finally:
        s.stop()
    return passed


if __name__ == "__main__":
    main()
