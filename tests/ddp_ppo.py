"""Launched by tests/test_ppo.py under torchrun: PPO on 2 processes (gloo, CPU).

Writes, per rank, the history and a checksum of the policy and value weights after training,
so the test can check the processes stayed in step and their metrics are whole-batch means.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_ppo import TINY, decline, ddp_ppo_config  # noqa: E402

from llmlab import ppo  # noqa: E402
from llmlab.device import seed_everything  # noqa: E402
from llmlab.model import GPT, ScalarModel  # noqa: E402
from llmlab.tokenizer import Tokenizer  # noqa: E402

if __name__ == "__main__":
    import torch
    import torch.distributed as dist

    seed_everything(0)                      # the same initial weights on every process
    policy, rm = GPT(TINY), ScalarModel(GPT(TINY))
    ref = GPT(TINY)
    ref.load_state_dict(policy.state_dict())
    before = float(sum(p.double().sum() for p in policy.parameters()))
    items = [decline(f"say something {i}") for i in range(16)]
    out = ppo.train_ppo(policy, ref, rm, Tokenizer([]), items, items[:2], [], {}, ddp_ppo_config(),
                        device="cpu", progress=False)
    rank = dist.get_rank()
    weights = torch.cat([p.detach().reshape(-1) for p in policy.parameters()])
    Path(sys.argv[1]).with_suffix(f".{rank}.json").write_text(json.dumps({
        "rank": rank, "world_size": dist.get_world_size(), "history": out["history"],
        "evals": len(out["evals"]), "before": before, "after": float(weights.double().sum()),
        "weights": weights[:64].tolist()}))
    dist.barrier()
    dist.destroy_process_group()
