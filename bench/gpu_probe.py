"""The measurements of bench/gpu_check.sh, one subcommand each, each writing a JSON list of
{"metric","value","target","unit"} records to --out:

  models   build the random real-size models once (bert-base with mBERT's 119,547-word vocabulary, opus-mt-size
           Marian en→de→en; --tiny: small ones, for the CPU dry run)
  augment  MLM and back-translation: augloop's augmenters vs nlpaug on the same device and texts, in the dtype
           of AUGLOOP_AUGMENT_DTYPE (bench/augment_throughput.py's races, fewer texts)
  train    the multi-task trainer's optimizer steps per second with AMP off, bf16 and fp16, arms interleaved
           step by step (the product's trainer: trainer.train.prepare, its stepper)
  ddp      run under torchrun: DistributedDataParallel training of a bert-base encoder + head on every
           process's device, bf16 autocast; global samples/s, and a check that the replicas' weights stay
           identical after the steps (the gradients were all-reduced)
  trainer_ddp  the product's own distributed path, as a worker runs a run with `nproc` > 1
           (services.distributed_training: torchrun, trainer.distributed, NCCL collectives on the GPUs,
           a checkpoint, the saved run): one epoch, its wall time and what the saved run says of itself

Random weights cost what trained ones cost: speed depends on the architecture only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path
from typing import Any

from bench_env import offline_cpu

ROOT = offline_cpu()


def record(metric: str, value: float, unit: str, target: float | None = None, **extra: Any) -> dict[str, Any]:
    return {"metric": metric, "value": value, "target": target, "unit": unit, **extra}


def write(out: Path, records: list[dict[str, Any]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
    for r in records:
        print(f"  {r['metric']}: {r['value']} {r['unit']}", flush=True)


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def encoder_dir(models: Path, tiny: bool) -> Path:
    from tests.tiny_models import build_tiny_bert_mlm

    out = models / ("encoder-tiny" if tiny else "bert-base")
    if not (out / "model.safetensors").is_file():
        if tiny:
            build_tiny_bert_mlm(out)
        else:
            build_tiny_bert_mlm(out, vocab_size=30_522, hidden=768, layers=12, heads=12)
    return out


def cmd_models(args: argparse.Namespace) -> None:
    """Build what the other subcommands load, into --models (reused when present)."""
    import augment_throughput as bench

    from tests.tiny_models import build_tiny_bert_mlm, build_tiny_marian_pair

    models: Path = args.models
    if args.tiny:  # in the paths bench/augment_throughput.py looks for, so its races load them
        if not (models / "mbert-size" / "model.safetensors").is_file():
            build_tiny_bert_mlm(models / "mbert-size")
        if not (models / "opus-size" / "de-en" / "model.safetensors").is_file():
            build_tiny_marian_pair(models / "opus-size", max_pairs=500)
    else:
        bench.build_mbert_size(models / "mbert-size")
        bench.build_opus_size(models / "opus-size")
    encoder_dir(models, args.tiny)
    print(f"models ready in {models}", flush=True)


def cmd_augment(args: argparse.Namespace) -> None:
    import augment_throughput as bench
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    dtype = os.environ.get("AUGLOOP_AUGMENT_DTYPE", "auto")
    rows = bench.load_rows()
    train = [r["text"] for r in rows if r["split"] == "train"]
    refs = [r["text"] for r in rows if r["split"] != "train"]
    from core.textnorm import content_hash

    hashes = {content_hash(r["text"]) for r in rows}
    sample = random.Random(0).sample(train, len(train))
    ns = argparse.Namespace(
        device=args.device, batch_tokens=8192, bt_tokens=args.bt_tokens, rounds=1, threads=args.threads
    )
    mlm = bench.bench_mlm(ns, sample[: args.mlm_texts], hashes, refs, args.models)
    bt = bench.bench_bt(ns, sample[: args.bt_texts], hashes, refs, args.models)
    tag = f"{args.device}_{dtype}"
    write(
        args.out,
        [
            record(f"mlm_variants_per_s_{tag}", round(mlm["ours"], 2), "variants/s"),
            record(f"mlm_nlpaug_variants_per_s_{tag}", round(mlm["nlpaug"], 2), "variants/s"),
            record(f"mlm_speedup_vs_nlpaug_{tag}", round(mlm["ours"] / mlm["nlpaug"], 2), "x", 3),
            record(f"mlm_fraction_of_bare_forward_{tag}", round(mlm["share"], 3), "fraction", 0.6),
            record(f"backtranslation_variants_per_s_{tag}", round(bt["ours"], 2), "variants/s"),
            record(f"backtranslation_nlpaug_variants_per_s_{tag}", round(bt["nlpaug"], 2), "variants/s"),
            record(f"backtranslation_speedup_vs_nlpaug_{tag}", round(bt["ours"] / bt["nlpaug"], 2), "x", 1.5),
        ],
    )


def cmd_train(args: argparse.Namespace) -> None:
    import torch
    from train_throughput import load_split

    from trainer.config import TrainConfig
    from trainer.examples import SplitData
    from trainer.steps import Stepper, prepare

    torch.set_num_threads(args.threads)
    tasks, train = load_split()
    texts = [train[i] for i in sorted(random.Random(0).sample(range(len(train)), min(args.texts, len(train))))]
    data = SplitData(tasks, texts, texts[:1], [], "political_social_media")
    encoder = encoder_dir(args.models, args.tiny)
    arms = {}
    for amp in args.amp.split(","):
        config = TrainConfig(
            encoder=str(encoder),
            epochs=1,
            max_length=args.max_length,
            batch_size=args.batch,
            grad_accum=1,
            amp=amp,
            device=args.device,
            rdrop_alpha=0.0,
            patience=0,
            seed=42,
            num_threads=args.threads if args.device == "cpu" else None,
        )
        run = prepare(config, data)
        stepper = Stepper.build(run, run.plan())
        run.model.train()
        batches = run.batches.epoch(0)
        stepper.batch(batches[0], step=True)  # warm-up: allocator, kernels, the scaler's first step
        arms[amp] = {"run": run, "stepper": stepper, "batches": batches[1:], "seconds": 0.0, "samples": 0}
    device = next(iter(arms.values()))["run"].model.parameters().__next__().device
    steps = min(len(a["batches"]) for a in arms.values())
    for k in range(steps):  # interleaved, so that a load that comes and goes hits every arm alike
        for amp in list(arms)[:: 1 if k % 2 == 0 else -1]:
            arm = arms[amp]
            sync(device)
            started = time.perf_counter()
            arm["stepper"].batch(arm["batches"][k], step=True)
            sync(device)
            arm["seconds"] += time.perf_counter() - started
            arm["samples"] += len(arm["batches"][k])
    records = []
    for amp, arm in arms.items():
        records.append(
            record(
                f"train_samples_per_s_{args.device}_amp_{amp}",
                round(arm["samples"] / arm["seconds"], 1),
                "samples/s",
                note=f"{steps} steps of batch {args.batch}, max length {args.max_length}",
            )
        )
    if "off" in arms:
        base = arms["off"]["samples"] / arms["off"]["seconds"]
        for amp, arm in arms.items():
            if amp != "off":
                records.append(
                    record(
                        f"train_amp_{amp}_speedup_vs_fp32_{args.device}",
                        round(arm["samples"] / arm["seconds"] / base, 2),
                        "x",
                    )
                )
    write(args.out, records)


def cmd_ddp(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from transformers import AutoModel

    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.set_device(local)
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    dist.init_process_group("nccl" if cuda else "gloo")

    class Classifier(torch.nn.Module):  # the encoder and a linear head over the first token
        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder
            self.head = torch.nn.Linear(encoder.config.hidden_size, 9)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.encoder(input_ids=ids).last_hidden_state[:, 0])

    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    # No pooler: the head reads the first token, and DDP refuses parameters that get no gradient.
    encoder = AutoModel.from_pretrained(str(encoder_dir(args.models, args.tiny)), add_pooling_layer=False)
    ddp = DistributedDataParallel(Classifier(encoder).to(device), device_ids=[local] if cuda else None)
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=1e-5)
    generator = torch.Generator().manual_seed(1000 + rank)  # each rank its own shard of the data
    vocab = encoder.config.vocab_size
    dtype = torch.bfloat16 if (cuda and torch.cuda.is_bf16_supported()) else None

    def step() -> float:
        ids = torch.randint(5, vocab, (args.batch, args.max_length), generator=generator).to(device)
        labels = torch.randint(0, 9, (args.batch,), generator=generator).to(device)
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(ddp(ids).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    for _ in range(args.warmup):
        step()
    sync(device)
    dist.barrier()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    seconds = time.perf_counter() - started
    # Replicas must hold the same weights: every rank's checksum, gathered.
    checksum = torch.tensor([float(sum(p.detach().double().sum() for p in ddp.parameters()))], device=device)
    sums = [torch.zeros_like(checksum) for _ in range(world)]
    dist.all_gather(sums, checksum)
    spread = float(max(s.item() for s in sums) - min(s.item() for s in sums))
    elapsed = torch.tensor([seconds], device=device)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    if rank == 0:
        samples = args.steps * args.batch * world
        write(
            args.out,
            [
                record(
                    f"ddp_{world}proc_samples_per_s_{args.device}",
                    round(samples / float(elapsed), 1),
                    "samples/s",
                    note=f"bert-base + head, batch {args.batch} per process × {world}, length {args.max_length}, "
                    f"{'bf16 autocast' if dtype else 'fp32'}, {args.steps} steps",
                ),
                record(f"ddp_{world}proc_replica_weight_spread_{args.device}", spread, "sum of weights", 0.0),
            ],
        )
    dist.destroy_process_group()


def cmd_trainer_ddp(args: argparse.Namespace) -> None:
    import tempfile

    from train_throughput import load_split

    from services.distributed_training import train_distributed
    from trainer.config import TrainConfig
    from trainer.examples import SplitData

    tasks, train = load_split()
    texts = [train[i] for i in sorted(random.Random(0).sample(range(len(train)), min(args.texts, len(train))))]
    held = max(len(texts) // 5, 8)
    data = SplitData(tasks, texts[:-held], texts[-held:], texts[-held:], "political_social_media")
    config = TrainConfig(
        encoder=str(encoder_dir(args.models, args.tiny)),
        epochs=1,
        max_length=args.max_length,
        batch_size=args.batch,
        grad_accum=1,
        amp="bf16" if args.device == "cuda" else "off",
        device=args.device,
        nproc=args.nproc,
        seed=42,
    )
    events: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        _result, saved = train_distributed(
            config,
            data,
            job_dir=Path(work) / "job",
            checkpoint_dir=Path(work) / "checkpoint",
            progress=events.append,
            should_stop=lambda: False,
        )
        seconds = time.perf_counter() - started
        metrics = json.loads((saved / "metrics.json").read_text(encoding="utf-8"))
    start = next(e for e in events if e["event"] == "start")
    note = f"{len(data.train)} texts, 1 epoch, batch {args.batch} per process, {start['device']}, amp {config.amp}"
    write(
        args.out,
        [
            record(f"trainer_ddp_{args.nproc}proc_seconds_{args.device}", round(seconds, 1), "s", note=note),
            record(
                f"trainer_ddp_{args.nproc}proc_processes_{args.device}",
                metrics["processes"],
                "processes",
                target=args.nproc,
            ),
            record(
                f"trainer_ddp_{args.nproc}proc_val_macro_f1_{args.device}",
                round(metrics["val"]["overall_macro_f1"], 4),
                "macro-F1",
            ),
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("models", "augment", "train", "ddp", "trainer_ddp"):
        p = sub.add_parser(name)
        p.add_argument("--models", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "augloop-gpu-models")
        p.add_argument("--tiny", action="store_true", help="small models (the CPU dry run)")
        p.add_argument("--device", default="cuda")
        p.add_argument("--threads", type=int, default=4)
        p.add_argument("--out", type=Path)
    sub.choices["augment"].add_argument("--mlm-texts", type=int, default=128)
    sub.choices["augment"].add_argument("--bt-texts", type=int, default=64)
    sub.choices["augment"].add_argument("--bt-tokens", type=int, default=48)
    for name in ("train", "ddp", "trainer_ddp"):
        sub.choices[name].add_argument("--batch", type=int, default=32)
        sub.choices[name].add_argument("--max-length", type=int, default=128)
    for name in ("train", "trainer_ddp"):
        sub.choices[name].add_argument("--texts", type=int, default=1024)
    sub.choices["trainer_ddp"].add_argument("--nproc", type=int, default=2)
    sub.choices["train"].add_argument("--amp", default="off,bf16,fp16")
    sub.choices["ddp"].add_argument("--steps", type=int, default=30)
    sub.choices["ddp"].add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    commands = {"models": cmd_models, "augment": cmd_augment, "train": cmd_train, "ddp": cmd_ddp}
    commands["trainer_ddp"] = cmd_trainer_ddp
    commands[args.command](args)


if __name__ == "__main__":
    main()
