"""Two-process DDP training on CPU (gloo), as torchrun would start it."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from tiny_config import tiny_train_config

from arkpose import train

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, synth_dir: str, out: str) -> None:
    """One rank: the environment torchrun sets, then the ordinary training call. It records
    which images this rank loaded per epoch and its final weights."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
        WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), ARKPOSE_THREADS="1",
    )
    import arkpose.data
    import arkpose.train.loop

    seen: dict[int, list[int]] = {}
    models = []
    base_get = arkpose.data.TrainDataset.__getitem__
    base_build = arkpose.train.loop.build_model

    def getitem(self, index):
        seen.setdefault(self.epoch, []).append(int(index))
        return base_get(self, index)

    def build(*args, **kwargs):
        models.append(base_build(*args, **kwargs))
        return models[-1]

    arkpose.data.TrainDataset.__getitem__ = getitem
    arkpose.train.loop.build_model = build  # the name the loop calls
    metrics = train.train(tiny_train_config(synth_dir, batch_size=2, epochs=2), out, progress=False)
    torch.save(models[0].state_dict(), os.path.join(out, f"weights{rank}.pt"))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"seen": seen, "loss": metrics["loss"]}, f)


@pytest.mark.slow
def test_two_process_gloo_training(synth_dir, tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(synth_dir), str(tmp_path)), nprocs=WORLD)

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    for epoch in ("0", "1"):
        a, b = (set(r["seen"][epoch]) for r in ranks)
        assert len(a) == len(b) == 4 and not a & b  # each rank its own half of the 8 images
        assert a | b == set(range(8))
    assert ranks[0]["seen"]["0"] != ranks[0]["seen"]["1"]  # reshuffled each epoch
    assert ranks[0]["loss"] == ranks[1]["loss"]  # the epoch loss is all-reduced

    w0, w1 = (torch.load(tmp_path / f"weights{r}.pt", weights_only=True) for r in range(WORLD))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # parameters and BN buffers
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert all(torch.equal(saved["model"][k], w0[k]) for k in w0)
    assert len(saved["rng_ranks"]) == WORLD

    records = train.read_metrics(tmp_path)  # rank 0 alone writes
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[-1]["world_size"] == 2 and records[-1]["effective_batch_size"] == 4
    log = (tmp_path / "train.log").read_text()
    assert "2 process(es)" in log and "effective 4" in log and log.count("epoch 2:") == 1
