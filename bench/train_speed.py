#!/usr/bin/env python
"""Training-step speed of the CPU phantom config: fp32 vs bf16 autocast, channels_last, input
size, slimmer proposal sampling, and torch's own convolutions instead of oneDNN's.

One process, one model per variant, the same batches (the training mapper on a
converted phantom dataset, fixed seed) for every variant; rounds are
interleaved so that a load change on the machine hits every variant alike.
Prints seconds per iteration (median over rounds) and the ratio to fp32.

    .venv/bin/python bench/train_speed.py --rounds 3 --iters 10
    .venv/bin/python bench/train_speed.py --dataset /tmp/abl/datasets/train_regions_4ch
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/phantom/mask_rcnn_R_18_FPN_cpu_bs4_800.yaml"

#: The demo's config: fewer proposals and sampled RoIs per image than CONFIG.
SLIM_CONFIG = ROOT / "configs/phantom/mask_rcnn_R_18_FPN_cpu_bf16_adamw_slim_1150.yaml"


def slim_sampling() -> list[str]:
    """``KEY VALUE`` overrides with SLIM_CONFIG's proposal and RoI sampling."""
    model = yaml.safe_load(SLIM_CONFIG.read_text())["MODEL"]
    return [
        item
        for node in ("RPN", "ROI_HEADS")
        for key, value in model[node].items()
        for item in (f"MODEL.{node}.{key}", str(value))
    ]


class Variant(NamedTuple):
    """One timed setting: config overrides and how the step runs."""

    opts: tuple[str, ...] = ()
    bf16: bool = False  # forward and losses under bf16 autocast
    channels_last: bool = False
    onednn: bool = True  # False: torch's own convolution kernels (torch.backends.mkldnn off)


VARIANTS = {
    "fp32": Variant(),
    "bf16 autocast": Variant(bf16=True),
    "fp32 channels_last": Variant(channels_last=True),
    "bf16 + channels_last": Variant(bf16=True, channels_last=True),
    "fp32, 160 px": Variant(("INPUT.MIN_SIZE_TRAIN", "(160,)", "INPUT.MAX_SIZE_TRAIN", "320")),
    "bf16, slim sampling": Variant(tuple(slim_sampling()), bf16=True),
    "fp32 without oneDNN": Variant(onednn=False),
}


def batches(cfg, name: str, count: int, seed: int = 0) -> list[list[dict]]:
    from detectron2.data import DatasetCatalog

    from brainseg_d2.data.dataset_mapper import BrainSegDatasetMapper

    dicts = DatasetCatalog.get(name)
    mapper = BrainSegDatasetMapper(cfg, is_train=True)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dicts), generator=gen).tolist()
    size = cfg.SOLVER.IMS_PER_BATCH
    torch.manual_seed(seed)
    import numpy as np

    np.random.seed(seed)
    return [[mapper(dicts[i]) for i in order[k * size : (k + 1) * size]] for k in range(count)]


def timed_steps(model, optimizer, data: list[list[dict]], bf16: bool) -> float:
    """Seconds for the training steps on ``data`` after its first two (warm-up) batches."""
    t0 = None
    for i, batch in enumerate(data):
        if i == 2:
            t0 = time.perf_counter()
        autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if bf16
                    else contextlib.nullcontext())  # fmt: skip
        with autocast:
            losses = model(batch)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", type=Path, help="converted phantom dataset (default: make one)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    p.add_argument("--iters", type=int, default=10, help="timed iterations per round")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                   metavar="NAME", help=f"variants to time (default all: {', '.join(VARIANTS)})")
    args = p.parse_args()
    variants = {v: VARIANTS[v] for v in dict.fromkeys(["fp32", *args.variants])}
    if args.threads:
        torch.set_num_threads(args.threads)

    from detectron2.data import MetadataCatalog  # noqa: F401 (registry side effects)
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    from brainseg_d2.config import get_brainseg_cfg
    from brainseg_d2.data.datasets import register_brainseg_dataset
    from brainseg_d2.engine.precision import native_bf16

    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.dataset
        if dataset is None:
            from brainseg_d2.data.convert import ConvertOptions, convert_dataset
            from brainseg_d2.data.phantom import generate_dataset
            from brainseg_d2.data.sources import find_brats_cases

            generate_dataset(Path(tmp) / "cases", 4, seed=0, spacing=1.5, p_empty=0.0)
            dataset = Path(tmp) / "speed"
            convert_dataset(find_brats_cases(Path(tmp) / "cases"), dataset,
                            ConvertOptions(target="regions", split=(1.0, 0.0, 0.0)),
                            progress=False)  # fmt: skip
        (name,) = [n for n in register_brainseg_dataset(dataset, name="speed") if "train" in n]
        runs = {}
        for variant, setting in variants.items():
            cfg = get_brainseg_cfg()
            cfg.merge_from_file(str(CONFIG))
            cfg.merge_from_list(["DATASETS.TRAIN", f"('{name}',)", *setting.opts])
            cfg.freeze()
            torch.manual_seed(0)
            model = build_model(cfg).train()
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
            data = batches(cfg, name, args.iters + 2)
            runs[variant] = (model, optimizer, data)
        times: dict[str, list[float]] = {v: [] for v in variants}
        with EventStorage():
            for _ in range(args.rounds):
                for variant, setting in variants.items():
                    model, optimizer, data = runs[variant]
                    if setting.channels_last:
                        model.to(memory_format=torch.channels_last)
                    with torch.backends.mkldnn.flags(enabled=setting.onednn):
                        seconds = timed_steps(model, optimizer, data, setting.bf16)
                    times[variant].append(seconds / args.iters)
    base = statistics.median(times["fp32"])
    print(f"CPU capability: {torch.backends.cpu.get_cpu_capability()}, native bf16: "
          f"{native_bf16()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| variant | s/iter by round | median | vs fp32 (speed-up) |\n|---|---|---|---|")
    for variant, values in times.items():
        med = statistics.median(values)
        rounds = ", ".join(f"{v:.3f}" for v in values)
        print(f"| {variant} | {rounds} | {med:.3f} | {base / med:.2f}x |")


if __name__ == "__main__":
    main()
