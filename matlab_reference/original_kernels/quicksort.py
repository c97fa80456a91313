"""mexMPnu8's time sort (CUDA/mexNvidia_quicksort.cu), on the host.

``cdp_simple_quicksort<<<1, 1>>>`` is one thread that partitions and launches a child grid for
each side (CUDA dynamic parallelism, which the executor cannot run). The children work on
disjoint ranges and each is sequential, so the result does not depend on when they run: this
is the same algorithm, literally (Hoare partition around the middle element, selection sort at
depth MAX_DEPTH or for ranges of at most INSERTION_SORT + 1 elements), which the unstable
order of equal spike times (one spike per round at the same sample) depends on.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np


def sort_constants(checkout) -> tuple[int, int]:
    """(MAX_DEPTH, INSERTION_SORT) of the checkout's CUDA/mexNvidia_quicksort.cu."""
    text = (Path(checkout) / "CUDA" / "mexNvidia_quicksort.cu").read_text()
    found = dict(re.findall(r'^\s*#\s*define\s+(MAX_DEPTH|INSERTION_SORT)\s+(\d+)', text, flags=re.M))
    return int(found["MAX_DEPTH"]), int(found["INSERTION_SORT"])


def selection_sort(data: np.ndarray, idx: np.ndarray, left: int, right: int) -> None:
    """``selection_sort`` (device function): swaps data and idx in place."""
    min_val_idx = 0
    for i in range(left, right + 1):
        min_val, min_idx = int(data[i]), i
        for j in range(i + 1, right + 1):
            if int(data[j]) < min_val:
                min_idx, min_val, min_val_idx = j, int(data[j]), int(idx[j])
        if i != min_idx:
            data[min_idx] = data[i]
            data[i] = min_val
            idx[min_idx] = idx[i]
            idx[i] = min_val_idx


def cdp_simple_quicksort(data: np.ndarray, idx: np.ndarray, left: int, right: int, depth: int,
                         max_depth: int, insertion_sort: int) -> None:
    """``cdp_simple_quicksort(data, idx, left, right, depth)``; data uint32, idx uint32, in place.
    Children are run depth-first, left then right (any order gives the same result)."""
    stack = [(left, right, depth)]
    while stack:
        left, right, depth = stack.pop()
        if depth >= max_depth or right - left <= insertion_sort:
            selection_sort(data, idx, left, right)
            continue
        lp, rp = left, right
        pivot = int(data[(left + right) // 2])  # C integer division of non-negative ints
        while lp <= rp:
            lval, rval = int(data[lp]), int(data[rp])
            lval_idx, rval_idx = int(idx[lp]), int(idx[rp])
            while lval < pivot:
                lp += 1
                lval, lval_idx = int(data[lp]), int(idx[lp])
            while rval > pivot:
                rp -= 1
                rval, rval_idx = int(data[rp]), int(idx[rp])
            if lp <= rp:
                data[lp], data[rp] = rval, lval
                idx[lp], idx[rp] = rval_idx, lval_idx
                lp += 1
                rp -= 1
        if lp < right:
            stack.append((lp, right, depth + 1))
        if left < rp:
            stack.append((left, rp, depth + 1))  # popped first: the left part, as launched first
