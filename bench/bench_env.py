"""What the model benchmarks set before they import torch or transformers (call `offline_cpu()` first).

Run as scripts (`.venv/bin/python bench/NAME.py`), they put the repository on sys.path themselves. Model hubs
are unreachable here (a hub name takes ~49 s to fail without HF_HUB_OFFLINE). On a CPU shared with other jobs,
OpenMP threads that spin at barriers while a sibling is descheduled stall every parallel region (measured: 2
threads 3-8x slower than 1; one opus-mt generate call 0.26-11.4 s instead of a steady 0.40 s): passive waiting
avoids that, and must be set before torch starts its OpenMP runtime.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def offline_cpu() -> Path:
    """The repository on sys.path; offline hubs, quiet tokenizers, passive OpenMP (unless already set).
    Returns the repository root."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return ROOT
