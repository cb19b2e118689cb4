"""Training on several GPUs or machines at once: `torchrun --nproc-per-node N -m distill_train ...`.

torchrun starts N copies of the trainer and tells each one who it is through environment variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Every copy ("rank") holds the whole model
and trains on its own part of each batch: DistributedDataParallel averages the gradients, the
quantizer sums its codebook statistics over all ranks, and rank 0 alone reads and writes the run
folder, the model file and the terminal; the others get what rank 0 read from it.

Without torchrun there is one rank, and every function here does nothing or returns its input.
"""
from __future__ import annotations

import os
import sys
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Callable, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


class StoppedElsewhere(Exception):
    """Another rank stopped with an error (its message is this one); this rank stops with it."""

    def __init__(self, rank: int, message: str):
        super().__init__(message)
        self.rank = rank


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def start() -> None:
    """Join the process group torchrun prepared (without torchrun, nothing to do).

    With CUDA, NCCL carries the model's tensors and Gloo the small CPU messages of `read_on_main`,
    `gather_bytes` and `average`; without, Gloo carries everything. The group is joined before this
    rank's device is checked (`rank_device`), so that a machine whose device fails can tell the others.
    """
    if world_size() > 1:
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo",
                                timeout=timedelta(minutes=30))


def rank_device(device: torch.device) -> torch.device:
    """The device this rank trains on: with CUDA one GPU per rank (cuda:LOCAL_RANK); ValueError if it has none."""
    if world_size() == 1:
        return device
    if device.type == "mps":
        raise ValueError("training with torchrun runs on CUDA GPUs or on CPUs, not on Apple's MPS: "
                         "add --device cpu, or train in one process")
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ValueError(f"this machine runs more ranks than it has GPUs ({torch.cuda.device_count()}): "
                             f"give torchrun --nproc-per-node {torch.cuda.device_count()} or less")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    return device


def stop() -> None:
    """Wait for every rank to get here (the model is written); the process then ends with `end_process`."""
    if dist.is_initialized():
        dist.barrier()


def joined() -> bool:
    """Whether this process has joined a process group (under torchrun, once `start` has run)."""
    return dist.is_initialized()


def end_process(code: int) -> None:
    """Under torchrun, end this process now with `code`, in the group (without torchrun, return).

    The group is not destroyed on the way out, because that can hang for ever: destroying a Gloo
    group joins its worker threads while this thread holds Python's lock, and a worker still letting
    go of the last collective's tensors needs that lock (torch 2.13: one run in 17 of the
    two-machine test under load, stuck in `~ProcessGroupGloo` from the DDP reducer's destructor).
    Nor may Python's own exit run: a group left alive then may abort the process from its
    communication threads instead of ending it with its status. So the process ends at once, its
    output flushed; every file it writes is complete before (`stop`, or an error on the way here).
    """
    if not dist.is_initialized():
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """The module to call for training: DistributedDataParallel around it with several ranks, else itself.

    Buffers are not broadcast from rank 0 before each forward pass: the only buffers that change in
    training are the quantizer's codebooks, and those are kept equal by the quantizer itself, which
    sums its k-means and EMA statistics over all ranks (vector_quantize_pytorch's sync_codebook, on
    by default when the process group exists before the codec is built). The loop checks at every
    checkpoint that the ranks really agree.
    """
    if world_size() == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    with warnings.catch_warnings():  # torch 2.13 renames broadcast_buffers; older versions lack the new name
        warnings.simplefilter("ignore", FutureWarning)
        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                       broadcast_buffers=False)


def average(values: list[float]) -> list[float]:
    """The mean of each value over all ranks (the same numbers on every rank)."""
    if world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return (t / world_size()).tolist()


def main_says(flag: bool) -> bool:
    """Rank 0's answer, on every rank (for decisions all ranks must take together)."""
    if world_size() == 1:
        return flag
    t = torch.tensor([int(flag)])
    dist.broadcast(t, 0)
    return bool(t.item())


def _from_main(data: bytes | None) -> bytes | None:
    """Rank 0's `data` (bytes or None), on every rank."""
    if world_size() == 1:
        return data
    size = torch.tensor([-1 if data is None else len(data)], dtype=torch.int64)
    dist.broadcast(size, 0)
    if size.item() <= 0:
        return None if size.item() < 0 else b""
    buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8) if is_main() else \
        torch.empty(int(size.item()), dtype=torch.uint8)
    dist.broadcast(buffer, 0)
    return buffer.numpy().tobytes()


def read_on_main(path: Path) -> bytes | None:
    """The file's bytes as rank 0 reads them, on every rank (None when rank 0 cannot read it).

    Only rank 0's machine needs the run folder, so a resumed run on several machines reads its
    checkpoints from there.
    """
    data = None
    if is_main():
        try:
            data = Path(path).read_bytes()
        except OSError:
            data = None
    return _from_main(data)


def on_main(action: Callable[[], T]) -> T | None:
    """Rank 0 alone does `action` (writing a file, say) while the others wait; returns its result on rank 0.

    If the action fails, every rank stops: rank 0 with the error itself, the others with StoppedElsewhere
    carrying its message, instead of waiting for a rank 0 that has left (and then failing with a
    traceback about a closed connection).
    """
    if world_size() == 1:
        return action()
    result, error = None, None
    if is_main():
        try:
            result = action()
        except Exception as e:  # noqa: BLE001 -- shared with the other ranks, then raised as it was
            error = e
    message = _from_main(None if error is None else (str(error) or type(error).__name__).encode())
    if error is not None:
        raise error
    if message is not None:
        raise StoppedElsewhere(0, message.decode())
    return result


def on_every_rank(action: Callable[[], T]) -> T:
    """Every rank does `action` (reading its machine's copy of the sounds, say); if it fails on any rank,
    every rank stops: that rank with its own error, the others with StoppedElsewhere naming it."""
    if world_size() == 1:
        return action()
    result, error = None, None
    try:
        result = action()
    except Exception as e:  # noqa: BLE001 -- shared with the other ranks, then raised as it was
        error = e
    said = gather_bytes(b"" if error is None else b"!" + (str(error) or type(error).__name__).encode())
    if error is not None:
        raise error
    failed = next((r for r, text in enumerate(said) if text), None)
    if failed is not None:
        raise StoppedElsewhere(failed, said[failed][1:].decode())
    return result


def lost_a_peer(error: BaseException) -> bool:
    """Whether `error` is a collective failing because another rank ended (crashed, stopped) or stopped answering."""
    text = str(error)
    return world_size() > 1 and (isinstance(error, dist.DistError) or
                                 any(s in text for s in ("Connection closed by peer", "Connection reset by peer",
                                                         "remote worker", "NCCL communicator was aborted")))


def gather_bytes(data: bytes) -> list[bytes]:
    """Every rank's `data`, in rank order, on every rank."""
    if world_size() == 1:
        return [data]
    size = torch.tensor([len(data)], dtype=torch.int64)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    buffer = torch.zeros(max(1, int(max(sizes).item())), dtype=torch.uint8)  # Gloo sends no empty tensors
    if data:
        buffer[:len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    buffers = [torch.empty_like(buffer) for _ in sizes]
    dist.all_gather(buffers, buffer)
    return [b[:int(n.item())].numpy().tobytes() for b, n in zip(buffers, sizes)]
