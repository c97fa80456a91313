"""Kernels-only text of an original mex .cu file, compiled with the CUDA-on-CPU executor.

The original files mix device kernels with a MATLAB host function (``mexFunction``: mxGPU API,
cudaMalloc, <<<>>> launches). ``kernels_only`` keeps the kernels and removes the rest without
changing the line count, so that compiler messages and the executor's barrier sites keep the
original line numbers:

* ``#include`` lines of the MATLAB / CUDA runtime headers (mex.h, gpu/mxGPUArray.h, cuda.h,
  cuda_runtime.h) and of mexNvidia_quicksort.cu (a dynamic-parallelism kernel: its sort is
  redone on the host, see quicksort.py) become blank lines;
* the whole of ``mexFunction`` (signature to closing brace) becomes blank lines; its sequence is
  replayed in Python (hosts.py, host_mpnu8.py);
* every ``__global__`` definition becomes ``extern "C" __global__`` (the executor exports only
  C-linkage kernels; the seven mex files have no overloaded kernel names);
* LOCKSTEP_PATCHES: where a kernel relies on warp lockstep (reads shared memory that other
  lanes of its warp have just written, without a barrier), the barrier that lockstep implies is
  inserted on an existing line (see the list for each case and why it is equivalent).

Whatever host API is left after this (a host helper outside mexFunction) is an error, not
silently compiled.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .executor import executor, set_fma

MEX_FILES = ("mexThSpkPC", "mexGetSpikes2", "mexSVDsmall2", "mexMPnu8", "mexWtW2",
             "mexClustering2", "mexDistances2")
KS25_FILES = ("spikedetector3",)  # Kilosort 2.5 (v2.5.2) files, from a second checkout

# Compile-time switches as the checkout's CUDA/mexGPUall.m builds each file (v2.0:
# enableStableMode = true -> `mexcuda -largeArrayDims -dynamic -DENABLE_STABLEMODE mexMPnu8.cu`;
# ENSURE_DETERM is not set).
DEFINES = {"mexMPnu8": {"ENABLE_STABLEMODE": 1}}

_HOST_INCLUDE = re.compile(r'^\s*#\s*include\s*[<"](mex\.h|gpu/mxGPUArray\.h|cuda\.h|'
                           r'cuda_runtime\.h|mexNvidia_quicksort\.cu)[>"]')
_MEXFUNCTION = re.compile(r'^\s*void\s+mexFunction\s*\(')
_GLOBAL = re.compile(r'(?<![\w"])__global__(?=\s)')
_HOST_API = re.compile(r'\b(mx[A-Z]\w*|mex[A-Z]\w*\s*\(|cudaMalloc|cudaMemcpy|cudaMemset|cudaFree|'
                       r'cudaStream\w*)|<<<')


@dataclass(frozen=True)
class LockstepPatch:
    """Insert ``__syncthreads();`` at the start of the line matching ``before`` inside kernel
    ``kernel``, right after the line matching ``after`` (both regexes, first match)."""

    mex: str
    kernel: str
    after: str
    before: str
    why: str


LOCKSTEP_PATCHES = (
    LockstepPatch(
        mex="mexSVDsmall2", kernel="reNormalize",
        after=r"sS\[tid\]\s*=\s*sqrt\(x\)", before=r"if\s*\(\s*tid\s*==\s*0\s*\)",
        why=("threads tid < Nrank (lanes of warp 0) write sS[tid]; then thread 0 sums sS[0..Nrank-1] "
             "with no barrier ('no need to sync here'). On the GPU the warp reconverges after the "
             "`if (tid<Nrank)` branch before lane 0 enters `if (tid==0)`, so lane 0 reads the "
             "values its neighbours wrote. The executor runs threads one after another between "
             "barriers, so thread 0 would read sS[1..] before threads 1.. write them (poison). "
             "A __syncthreads() before `if (tid==0)` gives the lockstep order; it is reached by "
             "every thread (outside any branch) and changes nothing else.")),
)


def source_path(checkout, mex: str) -> Path:
    path = Path(checkout) / "CUDA" / f"{mex}.cu"
    if not path.is_file():
        which = "--checkout-ks25 a Kilosort 2.5" if mex in KS25_FILES else "--checkout a Kilosort v2.0"
        raise FileNotFoundError(f"{path} not found: {which} checkout (the folder holding CUDA/)")
    return path


def _blank_function(lines: list[str], start: int) -> None:
    """Blank lines[start:] up to the brace closing the function whose signature starts at
    ``start`` (comments and string literals skipped when counting braces)."""
    depth, opened = 0, False
    in_block_comment = False
    for i in range(start, len(lines)):
        line = lines[i]
        j = 0
        while j < len(line):
            two = line[j:j + 2]
            if in_block_comment:
                if two == "*/":
                    in_block_comment = False
                    j += 1
            elif two == "//":
                break
            elif two == "/*":
                in_block_comment = True
                j += 1
            elif line[j] in "\"'":
                end = line.find(line[j], j + 1)
                while end > 0 and line[end - 1] == "\\":
                    end = line.find(line[j], end + 1)
                j = end if end > 0 else len(line)
            elif line[j] == "{":
                depth += 1
                opened = True
            elif line[j] == "}":
                depth -= 1
            j += 1
        lines[i] = ""
        if opened and depth == 0:
            return
    raise ValueError("mexFunction: no closing brace")


def _kernel_span(lines: list[str], kernel: str) -> tuple[int, int]:
    head = re.compile(rf'__global__\s+void\s+{kernel}\s*\(')
    for i, line in enumerate(lines):
        if head.search(line):
            for j in range(i + 1, len(lines)):
                if _GLOBAL.search(lines[j]) or _MEXFUNCTION.match(lines[j]):
                    return i, j
            return i, len(lines)
    raise ValueError(f"kernel {kernel} not found")


def _apply_patch(lines: list[str], patch: LockstepPatch) -> None:
    lo, hi = _kernel_span(lines, patch.kernel)
    after = next((i for i in range(lo, hi) if re.search(patch.after, lines[i])), None)
    if after is None:
        raise ValueError(f"{patch.mex}/{patch.kernel}: pattern {patch.after!r} not found; "
                         "this checkout differs from v2.0, review LOCKSTEP_PATCHES")
    before = next((i for i in range(after + 1, hi) if re.search(patch.before, lines[i])), None)
    if before is None:
        raise ValueError(f"{patch.mex}/{patch.kernel}: pattern {patch.before!r} not found after "
                         f"line {after + 1}; review LOCKSTEP_PATCHES")
    if any("__syncthreads" in lines[i] for i in range(after + 1, before)):
        return  # the checkout already has the barrier
    lines[before] = "__syncthreads(); /* lockstep (translate.py) */ " + lines[before]


def kernels_only(text: str, mex: str, *, lockstep: bool = True) -> str:
    """The kernels of ``text`` (the .cu file of ``mex``), as described in the module docstring;
    as many lines as the input. lockstep=False leaves out LOCKSTEP_PATCHES (to show they are
    needed)."""
    lines = text.split("\n")
    n = len(lines)
    for i, line in enumerate(lines):
        if _HOST_INCLUDE.match(line):
            lines[i] = ""
    starts = [i for i, line in enumerate(lines) if _MEXFUNCTION.match(line)]
    for i in starts:
        _blank_function(lines, i)
    lines = [_GLOBAL.sub('extern "C" __global__', line) if 'extern "C"' not in line else line
             for line in lines]
    for patch in LOCKSTEP_PATCHES if lockstep else ():
        if patch.mex == mex:
            _apply_patch(lines, patch)
    code = _without_comments("\n".join(lines)).split("\n")
    left = [(i + 1, m.group(0)) for i, line in enumerate(code) for m in [_HOST_API.search(line)] if m]
    if left:
        raise ValueError(f"{mex}: host code outside mexFunction (line, token): {left[:5]}")
    assert len(lines) == n
    return "\n".join(lines)


def _without_comments(text: str) -> str:
    """``text`` with comments replaced by spaces (newlines kept)."""
    return re.sub(r'//[^\n]*|/\*.*?\*/', lambda m: re.sub(r'[^\n]', ' ', m.group(0)), text,
                  flags=re.S)


def kernel_names(text: str) -> list[str]:
    return re.findall(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(', _without_comments(text))


def source_constants(text: str) -> dict[str, int]:
    """The file's ``const int a = 1, b = 2;`` constants (the host code uses them too: Nthreads,
    maxFR, nmaxiter, ...)."""
    out = {}
    for decl in re.findall(r'^\s*const\s+int\s+([^;\n]+);', text, flags=re.M):
        for name, value in re.findall(r'(\w+)\s*=\s*(\d+)', decl):
            out[name] = int(value)
    return out


def defines_of(text: str) -> dict[str, int]:
    """``#define NAME <int>`` of a file (mexNvidia_quicksort.cu's MAX_DEPTH, INSERTION_SORT)."""
    return {k: int(v) for k, v in re.findall(r'^\s*#\s*define\s+(\w+)\s+(\d+)\s*$', text, flags=re.M)}


@dataclass
class Compiled:
    """A mex file's kernels compiled for the CPU, with the constants its host code uses."""

    mex: str
    module: object
    constants: dict
    source: Path
    kernels: tuple

    def kernel(self, name: str):
        return self.module.get_function(name)


_CACHE: dict = {}


def compile_mex(checkout, mex: str, *, fma: bool = False, lockstep: bool = True) -> Compiled:
    """Translate and compile ``<checkout>/CUDA/<mex>.cu`` (cached per checkout, file and build).
    fma: fuse plain a*b+c as nvcc does by default (see executor.set_fma); lockstep: see
    kernels_only."""
    path = source_path(checkout, mex)
    text = path.read_text()
    key = (str(path.resolve()), text, fma, lockstep)
    if key not in _CACHE:
        Module, _ = executor()
        set_fma(fma)
        code = kernels_only(text, mex, lockstep=lockstep)
        mod = Module(code, defines=DEFINES.get(mex, {}), name=path.name)
        names = tuple(kernel_names(code))
        for name in names:  # compiles now, under this FMA setting, and checks every export
            mod.get_function(name)
        _CACHE[key] = Compiled(mex, mod, source_constants(text), path, names)
    return _CACHE[key]
