#!/usr/bin/env python3
"""Compiles kernels/cuda/*.cu with NVRTC for every architecture llava-edge supports, so a kernel
that does not compile fails CI on machines without a GPU or CUDA toolkit.

NVRTC comes from PyPI (nvidia-cuda-nvrtc-cu12); pass the directory holding libnvrtc.so.12 as
--lib or let the script find it in the installed package. Prints one line per architecture with
the PTX size and the kernels found in it; exits 1 on any compile error (with NVRTC's log)."""
import argparse
import ctypes
import glob
import os
import re
import sys

ARCHS = ["compute_53", "compute_61", "compute_72", "compute_75", "compute_87", "compute_89"]


def find_lib(hint):
    cands = []
    if hint:
        cands += glob.glob(os.path.join(hint, "libnvrtc.so*"))
    try:
        import nvidia.cuda_nvrtc  # type: ignore

        for p in nvidia.cuda_nvrtc.__path__:
            cands += glob.glob(os.path.join(p, "lib", "libnvrtc.so*"))
    except ImportError:
        pass
    cands = [c for c in cands if "builtins" not in c and "alt" not in os.path.basename(c)]
    if not cands:
        sys.exit("compile_check: libnvrtc.so not found (pip install nvidia-cuda-nvrtc-cu12)")
    return sorted(cands)[0]


def check(nvrtc, fn, err):
    if err != 0:
        nvrtc.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise RuntimeError(f"{fn}: {nvrtc.nvrtcGetErrorString(err).decode()}")


def compile_one(nvrtc, src, name, arch):
    prog = ctypes.c_void_p()
    check(nvrtc, "nvrtcCreateProgram",
          nvrtc.nvrtcCreateProgram(ctypes.byref(prog), src, name.encode(), 0, None, None))
    opts = [f"--gpu-architecture={arch}".encode(), b"--std=c++17", b"-default-device"]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    rc = nvrtc.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(prog, log)
    if rc != 0:
        nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
        return None, log.value.decode(errors="replace")
    nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    check(nvrtc, "nvrtcGetPTX", nvrtc.nvrtcGetPTX(prog, ptx))
    nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
    return ptx.value.decode(), log.value.decode(errors="replace")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", help="directory with libnvrtc.so.12")
    ap.add_argument("--out", help="write each architecture's PTX here")
    args = ap.parse_args()
    lib = find_lib(args.lib)
    nvrtc = ctypes.CDLL(lib)
    major, minor = ctypes.c_int(), ctypes.c_int()
    nvrtc.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    print(f"NVRTC {major.value}.{minor.value} ({lib})")
    here = os.path.dirname(os.path.abspath(__file__))
    failed = False
    for path in sorted(glob.glob(os.path.join(here, "*.cu"))):
        src = open(path, "rb").read()
        declared = sorted(set(re.findall(rb"__global__ void (\w+)", src)))
        for arch in ARCHS:
            ptx, log = compile_one(nvrtc, src, os.path.basename(path), arch)
            if ptx is None:
                print(f"FAILED {os.path.basename(path)} {arch}:\n{log}")
                failed = True
                continue
            entries = set(re.findall(r"\.entry (\w+)", ptx))
            missing = [k.decode() for k in declared if k.decode() not in entries]
            if missing:
                print(f"FAILED {os.path.basename(path)} {arch}: kernels missing from the PTX: {missing}")
                failed = True
            dp4a = "dp4a" in ptx
            print(f"ok {os.path.basename(path)} {arch}: {len(ptx)} bytes of PTX, {len(entries)} kernels, "
                  f"dp4a {'used' if dp4a else 'not used'}" + (f"; warnings: {log.strip()}" if log.strip() else ""))
            if args.out:
                os.makedirs(args.out, exist_ok=True)
                open(os.path.join(args.out, f"{os.path.basename(path)}.{arch}.ptx"), "w").write(ptx)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
