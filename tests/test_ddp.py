"""DDP: one step under torchrun, two ranks on different shards, equals one process's step on the union batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.fixtures.stores import free_port

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))
STEP = "tests.fixtures.ddp_step"  # one LoRA step from the product's pieces; its docstring says what it writes
# AdamW's first step moves a weight by lr * g / (|g| + eps): near g = 0 its slope is lr / eps, so rounding noise in a
# gradient within ~1e-9 of zero (a batch of two vs an all-reduce of two batches of one) moves it by up to ~1e-5 at
# lr 3e-3. Weights agree to lr / 100; a rank that missed the average is off by up to 2 x lr.
WEIGHT_TOLERANCE_OF_LR = 1e-2
GRADIENT_ATOL = 1e-7  # the gradients themselves (AdamW's first moment) agree to float rounding: ~2e-9 of ~5e-3


def test_two_ranks_step_together_and_match_one_process_on_the_union_batch(tiny_base: Path, tmp_path: Path) -> None:
    """torchrun, 2 gloo ranks on CPU, seed 0, exactly 1 step, rank r training on row r of a 2-row batch: both ranks
    end with bit-equal LoRA weights, moved from their initialisation, and equal (within lr / 100; gradients within
    1e-7) to one process stepping on both rows; the rows have equal target counts, so DDP's mean of per-rank mean
    losses is the one process's mean loss.

    Catches `World.wrap` returning the bare model instead of `DistributedDataParallel(...)` (no gradient averaging:
    the ranks diverge), and `packed_batches` giving every rank the same shard (`rows[0::world_size]` for
    `rows[rank::world_size]`: the ranks agree, but on half the data).
    """
    env = {**os.environ, "HOUSESTYLE_HOME": str(tmp_path / "home"), "HOUSESTYLE_CPU_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(  # rank 0 also takes the one-process step on the union batch, after the DDP step
        [TORCHRUN, "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
         "-m", STEP, str(tiny_base), str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]

    runs = [json.loads((tmp_path / f"rank-{rank}-run.json").read_text()) for rank in (0, 1)]
    alone = json.loads((tmp_path / "alone-run.json").read_text())
    assert [run["world_size"] for run in runs] == [2, 2] and alone["world_size"] == 1
    assert [run["steps"] for run in runs] == [1, 1] and alone["steps"] == 1
    assert runs[0]["targets"] == runs[1]["targets"]  # equal shards' target counts: the comparison below is honest
    assert alone["targets"] == [runs[0]["targets"][0] + runs[1]["targets"][0]]

    def weights(name: str, kind: str) -> dict[str, torch.Tensor]:
        return load_file(tmp_path / f"{name}-{kind}.safetensors")

    initial, single = weights("alone", "init"), weights("alone", "step")
    rank0, rank1 = weights("rank-0", "step"), weights("rank-1", "step")
    assert rank0.keys() == rank1.keys() == single.keys() == initial.keys() and rank0
    assert all(torch.equal(initial[name], start) for name, start in weights("rank-0", "init").items())  # same seed

    apart = {name: float((rank0[name] - rank1[name]).abs().max()) for name in rank0}
    assert all(torch.equal(rank0[name], rank1[name]) for name in rank0), (
        f"rank 0 and rank 1 LoRA weights differ (up to {max(apart.values()):.2e}, in {sum(map(bool, apart.values()))} "
        "tensors): the ranks' gradients were not averaged")

    lr = alone["lr"]
    moved = max(float((rank0[name] - initial[name]).abs().max()) for name in rank0)
    assert moved > lr / 2, f"the step moved no LoRA weight by more than {moved:.2e} (lr {lr})"

    off = max(float((rank0[name] - single[name]).abs().max()) for name in rank0)
    assert off <= WEIGHT_TOLERANCE_OF_LR * lr, (
        f"the 2-rank step is {off:.2e} from one process's step on the union batch (tolerance "
        f"{WEIGHT_TOLERANCE_OF_LR * lr:.1e})")
    single_gradient = weights("alone", "moment")
    for name, gradient in weights("rank-0", "moment").items():
        torch.testing.assert_close(gradient, single_gradient[name], rtol=1e-4, atol=GRADIENT_ATOL, msg=(
            lambda text, name=name: f"{name}: the 2-rank gradient is not one process's on the union batch: {text}"))
