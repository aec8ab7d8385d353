"""llmlab's command line: ``python -m llmlab <command>``.

Commands:

- ``train``: pretrain the preset's GPT (notebook 02, "Beyond one machine"); what ``torchrun``
  launches for DistributedDataParallel::

      python -m llmlab train --preset smoke --max-steps 20
      torchrun --nproc_per_node=2 -m llmlab train --preset smoke --train-bin train.bin

- ``ppo``: RLHF with PPO against the preset's reward model (notebook 06) on one process or,
  under ``torchrun``, with every rollout sharded over the processes and a data-parallel update::

      python -m llmlab ppo --preset smoke --iterations 2
      torchrun --nproc_per_node=2 -m llmlab ppo --preset smoke --out ppo.json

Entry points sit at the top of the package: they may ask :mod:`llmlab.stages` for artifacts
(the token files when no ``--train-bin`` is given); the stage modules they call never do.
A user error (an unknown preset, a missing token file) prints one line and exits with 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path


class UserError(Exception):
    """A mistake in the command line: printed as one line, exit status 2, no traceback."""


def train_main(argv=None) -> int:
    """``python -m llmlab train`` or ``torchrun --nproc_per_node=N -m llmlab train``."""
    from . import packing
    from .config import get_preset
    from .device import seed_everything
    from .model import GPT
    from .train import train

    ap = argparse.ArgumentParser(prog="python -m llmlab train",
                                 description="Pretrain llmlab's GPT (notebook 02).")
    ap.add_argument("--preset", default=None, help="smoke, cpu or gpu")
    ap.add_argument("--train-bin", help="uint16 token file (default: the preset's train.bin)")
    ap.add_argument("--val-bin", help="uint16 token file (default: the preset's val.bin)")
    ap.add_argument("--max-steps", type=int, help="override TrainConfig.max_steps")
    ap.add_argument("--batch-size", type=int, help="override TrainConfig.batch_size (per process)")
    ap.add_argument("--grad-accum", type=int, help="override TrainConfig.grad_accum")
    ap.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best present)")
    ap.add_argument("--out", help="write the TrainResult here as JSON (rank 0)")
    ap.add_argument("--checkpoint", help="checkpoint path (rank 0 writes it)")
    args = ap.parse_args(argv)
    try:
        p = get_preset(args.preset)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    overrides = {k: v for k, v in {"max_steps": args.max_steps, "batch_size": args.batch_size,
                                   "grad_accum": args.grad_accum}.items() if v is not None}
    for k, v in overrides.items():
        if v < 1:
            raise UserError(f"--{k.replace('_', '-')} must be at least 1, got {v}")
    cfg = dataclasses.replace(p.train, **overrides)
    if args.train_bin:
        for f in (args.train_bin, args.val_bin):
            if f and not Path(f).is_file():
                raise UserError(f"no token file at {f}")
        train_data = packing.load_tokens(Path(args.train_bin))
        val_data = packing.load_tokens(Path(args.val_bin or args.train_bin))
    else:
        from . import stages

        tok = stages.get_tokens(p)
        train_data = packing.load_tokens(tok.file("train.bin"))
        val_data = packing.load_tokens(tok.file("val.bin"))
    seed_everything(cfg.seed)
    model = GPT(p.model)
    res = train(model, train_data, val_data, cfg, device=args.device,
                checkpoint_path=Path(args.checkpoint) if args.checkpoint else None)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"steps {res.steps} | final train loss {res.train_losses[-1]:.4f} | "
              f"val loss {res.val_losses[-1][1]:.4f} | {res.tokens_per_sec:,.0f} tok/s")
        if args.out:
            Path(args.out).write_text(json.dumps(res.to_dict()))
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()              # no process tears down while another still talks to it
        dist.destroy_process_group()
    return 0


def ppo_main(argv=None) -> int:
    """``python -m llmlab ppo`` or ``torchrun --nproc_per_node=N -m llmlab ppo``."""
    import copy

    import torch.distributed as dist

    from . import ppo, prefs, stages
    from .config import get_preset, ppo_config
    from .device import pick_device, seed_everything
    from .train import init_distributed, save_checkpoint

    ap = argparse.ArgumentParser(prog="python -m llmlab ppo",
                                 description="RLHF with PPO against the reward model (notebook 06).")
    ap.add_argument("--preset", default=None, help="smoke, cpu or gpu")
    ap.add_argument("--variant", default="main", help=f"one of {', '.join(ppo.VARIANTS)}")
    ap.add_argument("--iterations", type=int, help="override the variant's PPO iterations")
    ap.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best present)")
    ap.add_argument("--out", help="write history and held-out evaluations here as JSON (rank 0)")
    ap.add_argument("--policy-out", help="save the trained policy here (rank 0)")
    args = ap.parse_args(argv)
    try:
        p = get_preset(args.preset)
        c = ppo.variant_config(ppo_config(p), args.variant)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.iterations is not None:
        if args.iterations < 1:
            raise UserError(f"--iterations must be at least 1, got {args.iterations}")
        c = dataclasses.replace(c, iterations=args.iterations)
    device = pick_device(args.device)
    # what PPO starts from (SFT model, reward model) is built before the processes join: the
    # cache's lock lets one process build each artifact while the others wait for it, and
    # with WORLD_SIZE hidden that build trains on its own instead of waiting for the group
    world_size = os.environ.get("WORLD_SIZE")
    os.environ["WORLD_SIZE"] = "1"
    try:
        stages.get_sft_model(p)
        stages.get_reward_model(p)
    finally:
        if world_size is None:
            os.environ.pop("WORLD_SIZE")
        else:
            os.environ["WORLD_SIZE"] = world_size
    d = init_distributed(device)
    tok = stages.get_tokenizer(p)
    sft_model = stages.load_sft_model(p, device)
    rm = stages.load_reward_model(p, device)
    world = stages.get_world(p)
    sets = ppo.prompt_sets(world, p.sft, c)
    seed_everything(c.seed)
    policy, ref = copy.deepcopy(sft_model), copy.deepcopy(sft_model).eval()
    res = ppo.train_ppo(policy, ref, rm, tok, sets["train"], sets["eval"], sets["track"],
                        prefs.relation_values(world), c, p.sft.template, device)
    if d.master:
        first, last = res["evals"][0], res["evals"][-1]
        print(f"PPO {args.variant}: {c.iterations} iterations on {d.world_size} process(es) in "
              f"{res['seconds']:.0f} s | held-out gold {first['gold']:+.3f} -> {last['gold']:+.3f} | "
              f"proxy {first['proxy']:+.3f} -> {last['proxy']:+.3f} | KL {last['kl']:.3f}")
        if args.out:
            Path(args.out).write_text(json.dumps({"world_size": d.world_size, "variant": args.variant,
                                                  "history": res["history"], "evals": res["evals"],
                                                  "seconds": res["seconds"]}, default=float))
        if args.policy_out:
            save_checkpoint(Path(args.policy_out), policy.cpu())
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return 0


COMMANDS = {"train": train_main, "ppo": ppo_main}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        got = repr(argv[0]) if argv else "nothing"
        print(f"llmlab: error: expected a command ({', '.join(COMMANDS)}), got {got}",
              file=sys.stderr)
        return 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except UserError as exc:
        print(f"llmlab {argv[0]}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
