"""The papers' synthetic tasks, trained end to end: small LMs of lrc blocks on multi-query
associative recall (Zoology) and selective copying (Mamba), with a loss/accuracy plot and a
summary table.

    python examples/synthetic/train.py --task mqar --models mamba,s4d,gla,hawk,user \\
        --steps 600 --device cpu --threads 1 --out results/synthetic/
    python examples/synthetic/train.py --task copying ...     # the same for selective copying

Every model is an `lrc.models.LM` with the same d_model, layer count and gated MLPs; only the
token mixer differs (see models.py). All models see the same training batches (fresh ones
every step, from one seed) and are scored on one held-out set. The loss and the accuracy
count the answer positions only. Writes TASK.json (the configuration, the command and every
evaluation), TASK.png (loss and accuracy against step, one line per model) and TASK.md (the
table) into --out. On CPU tensors the blocks run on lrc's torch lowering; on a GPU
(--device cuda) lrc's generated kernels run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from models import MODELS, build_model
from tasks import IGNORE, TASKS, accuracy
from tqdm import tqdm

from lrc.nn import param_groups

# each task's data arguments (tasks.py) with their defaults, as CLI flags
TASK_ARGS = {"mqar": {"seq_len": 32, "vocab_size": 32, "num_kv_pairs": 4},
             "copying": {"seq_len": 32, "vocab_size": 8, "num_tokens": 4}}
MIXERS = {"mamba": "Mamba (S6, selective)", "s4d": "S4D (LTI)", "gla": "GLA (gated)",
          "hawk": "Hawk RG-LRU (gated)", "user": "README spec (S6, selective)"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (argv None: sys.argv)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS), default="copying")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated: " +
                   ", ".join(MODELS))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", type=Path, default=Path("results/synthetic"))
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--eval-size", type=int, default=512, help="held-out sequences")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's "
                   "default)")
    for name in {k: None for d in TASK_ARGS.values() for k in d}:
        p.add_argument("--" + name.replace("_", "-"), type=int, default=argparse.SUPPRESS,
                       help="the task's data; unset: " + ", ".join(
                           f"{t} {d[name]}" for t, d in TASK_ARGS.items() if name in d))
    args = p.parse_args(argv)
    foreign = [k for d in TASK_ARGS.values() for k in d
               if k not in TASK_ARGS[args.task] and hasattr(args, k)]
    if foreign:
        p.error(f"--task {args.task} takes no {', '.join(foreign)}")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    args.data = {k: getattr(args, k, v) for k, v in TASK_ARGS[args.task].items()}
    return args


def make_batch(args: argparse.Namespace, n: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """n sequences of the task, on the run's device."""
    x, y = TASKS[args.task](n, gen=gen, **args.data)
    return x.to(args.device), y.to(args.device)


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: tuple[torch.Tensor, torch.Tensor],
             batch: int) -> dict[str, float]:
    """Loss (mean over answers), token accuracy and sequence accuracy on a held-out set."""
    model.eval()
    logits = torch.cat([model(x) for x in data[0].split(batch)])
    model.train()
    targets = data[1]
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
    token, sequence = accuracy(logits, targets)
    return {"loss": loss.item(), "accuracy": token, "sequence_accuracy": sequence}


def lr_factor(step: int, steps: int) -> float:
    """Linear warmup over the first 10% of steps, then cosine decay to 0."""
    warm = max(1, steps // 10)
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def train_one(name: str, args: argparse.Namespace,
              eval_set: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """Train one model; its parameter count, evaluations along the way, and wall time."""
    torch.manual_seed(args.seed)
    model = build_model(name, args.data["vocab_size"], args.d_model, args.layers)
    model.to(args.device)
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr,
                            betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, args.steps))
    gen = torch.Generator().manual_seed(args.seed + 1)    # the same batches for every model
    history, losses = [], []
    start = time.perf_counter()
    bar = tqdm(range(1, args.steps + 1), desc=f"{args.task} {name:>5}", mininterval=1.0,
               dynamic_ncols=True)
    for step in bar:
        x, y = make_batch(args, args.batch, gen)
        logits = model(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % args.eval_every == 0 or step == args.steps:
            ev = evaluate(model, eval_set, 4 * args.batch)
            train_loss = sum(losses) / len(losses)
            history.append({"step": step, "train_loss": train_loss, **ev,
                            "seconds": time.perf_counter() - start})
            losses = []
            bar.set_postfix(loss=f"{train_loss:.3f}", acc=f"{ev['accuracy']:.3f}")
    bar.close()
    return {"mixer": MIXERS[name], "params": sum(p.numel() for p in model.parameters()),
            "history": history, "final": history[-1],
            "best_accuracy": max(h["accuracy"] for h in history),
            "seconds": time.perf_counter() - start}


def machine(device: str) -> str:
    """The machine in words: the GPU, or the CPU cores and threads with lrc's torch lowering."""
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)}, lrc's generated Triton kernels"
    return (f"{os.cpu_count()}-core CPU, {torch.get_num_threads()} torch thread(s), "
            "lrc's torch lowering")


def table(report: dict) -> str:
    """The results as a markdown table, one row per model."""
    rows = ["| model | mixer | params | eval loss | answer accuracy | sequences all right "
            "| best accuracy | train s |", "|---|---|---|---|---|---|---|---|"]
    for name, r in report["results"].items():
        f = r["final"]
        rows.append(f"| {name} | {r['mixer']} | {r['params']:,} | {f['loss']:.3f} | "
                    f"{f['accuracy']:.3f} | {f['sequence_accuracy']:.3f} | "
                    f"{r['best_accuracy']:.3f} | {r['seconds']:.0f} |")
    return "\n".join(rows)


def describe(report: dict) -> str:
    """One paragraph: the task, its sizes and the training setup."""
    c = report["config"]
    data = ", ".join(f"{k} {v}" for k, v in c["data"].items())
    return (f"Task `{c['task']}` ({data}); d_model {c['d_model']}, {c['layers']} layers; "
            f"{c['steps']} steps of batch {c['batch']}, AdamW lr {c['lr']}, weight decay "
            f"{c['weight_decay']}; accuracy on {c['eval_size']} held-out sequences, answer "
            f"positions only. Machine: {report['machine']}.")


def plot(report: dict, path: Path) -> None:
    """Train loss and held-out accuracy against step, one line per model, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for name, r in report["results"].items():
        steps = [h["step"] for h in r["history"]]
        ax_loss.plot(steps, [h["train_loss"] for h in r["history"]], label=name)
        ax_acc.plot(steps, [h["accuracy"] for h in r["history"]], label=name)
    ax_loss.set(xlabel="step", ylabel="train loss (answer positions)", yscale="log")
    ax_acc.set(xlabel="step", ylabel="held-out accuracy (answer positions)", ylim=(0, 1.02))
    ax_acc.legend()
    c = report["config"]
    fig.suptitle(f"{c['task']}: d_model {c['d_model']}, {c['layers']} layers, "
                 + ", ".join(f"{k} {v}" for k, v in c["data"].items()))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    """Train every model on the task, write TASK.json, TASK.png and TASK.md; the report."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    eval_set = make_batch(args, args.eval_size, torch.Generator().manual_seed(args.seed + 1000))
    config = {k: getattr(args, k) for k in ("task", "models", "steps", "device", "d_model",
                                            "layers", "batch", "lr", "weight_decay",
                                            "eval_every", "eval_size", "seed", "threads",
                                            "data")}
    report = {"command": "python examples/synthetic/train.py " + shlex.join(argv),
              "machine": machine(args.device), "config": config,
              "results": {name: train_one(name, args, eval_set) for name in args.models}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.task}.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(report, args.out / f"{args.task}.png")
    md = (f"# {args.task}\n\n```\n{report['command']}\n```\n\n{describe(report)}\n\n"
          f"{table(report)}\n\n![{args.task}]({args.task}.png)\n")
    (args.out / f"{args.task}.md").write_text(md)
    print(table(report))
    return report


if __name__ == "__main__":
    main()
