"""Launched by tests/test_objectives.py under torchrun: the pairwise objective on 2 processes."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_objectives import CFG, ddp_config, pair_batch, pairs, pairwise_loss  # noqa: E402

from llmlab.device import seed_everything  # noqa: E402
from llmlab.model import GPT, ScalarModel  # noqa: E402
from llmlab.train import train  # noqa: E402

if __name__ == "__main__":
    import torch.distributed as dist

    seed_everything(0)
    res = train(ScalarModel(GPT(CFG)), pairs(256, 0), pairs(64, 1), ddp_config(batch_size=4),
                device="cpu", batch_fn=pair_batch, loss_fn=pairwise_loss)
    if dist.get_rank() == 0:
        Path(sys.argv[1]).write_text(json.dumps(res.to_dict()))
    dist.barrier()
    dist.destroy_process_group()
