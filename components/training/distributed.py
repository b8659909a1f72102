"""Data-parallel training on CPU through `accelerate`: the launch helper and rank/world helpers.

`peftpipe stage train -S train.processes=N` re-launches itself as `accelerate launch` with N local
processes (torchrun underneath; the train loop joins them with gloo through `Accelerator(cpu=True)`).
`accelerate launch --config_file infra/accelerate/ddp.yaml -m peftpipe.cli stage train` starts such a
group directly, on one machine or several. Inside a group the loop in components/training/train.py gives each
rank its share of every step's batch; only the main process writes files.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

LAUNCHED_ENV = ("WORLD_SIZE", "LOCAL_RANK")  # set by torchrun / accelerate launch in every process


def in_launched_group() -> bool:
    """True inside a process started by a distributed launcher (even a group of one)."""
    return any(k in os.environ for k in LAUNCHED_ENV)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """The process that writes checkpoints, outputs and metrics (rank 0; True outside a group)."""
    return rank() == 0


def default_threads() -> int:
    """Torch threads per process when `train.threads` is 0: the cores shared among this machine's ranks (0 outside a group: all)."""
    if world_size() <= 1:
        return 0
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, (os.cpu_count() or 1) // max(local, 1))


def free_port() -> int:
    """A TCP port free on this machine now, for the group's rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(processes: int, cli_args: list[str], port: int | None = None) -> list[str]:
    """`accelerate launch` running `python -m peftpipe.cli *cli_args` in `processes` local processes.

    `--multi_gpu` selects accelerate's torchrun launcher (one process per rank); `--cpu` would select
    its single-process/MPI launcher instead. The processes train on CPU regardless: the train loop
    builds `Accelerator(cpu=True)`, which joins the group with the gloo backend.
    """
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
            "--num_processes", str(processes), "--num_machines", "1", "--machine_rank", "0",
            "--main_process_ip", "127.0.0.1", "--main_process_port", str(port or free_port()),
            "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "peftpipe.cli", *cli_args]


def relaunch_stage(args, params) -> int | None:
    """Run `peftpipe stage train` in `train.processes` processes and return its exit code.

    None when this process should run the stage itself: another stage, one process, or already
    inside a launched group. (A batch smaller than train.processes is refused as the params are read.)
    """
    if args.name != "train" or params.train.processes <= 1 or in_launched_group():
        return None
    cli_args = (["--debug"] if getattr(args, "debug", False) else []) + ["stage", args.name]
    for s in args.set or []:
        cli_args += ["-S", s]
    print(f"train: launching {params.train.processes} processes (accelerate, gloo on CPU)", flush=True)
    return subprocess.run(launch_command(params.train.processes, cli_args)).returncode


def accelerator(device=None):
    """An Accelerator inside a launched group of more than one process (gloo on CPU, NCCL on CUDA), else None."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("FSDP shards over GPUs: on CPU the train stage trains data-parallel (DDP); launch with "
                               "infra/accelerate/ddp.yaml (infra/accelerate/README.md)")
    if world_size() <= 1:
        return None
    from accelerate import Accelerator

    return Accelerator(cpu=getattr(device, "type", "cpu") != "cuda")


def all_reduce_sum(t):
    """Sum a tensor over every rank (in place; returned for convenience)."""
    import torch.distributed as tdist

    tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


def all_gather(obj) -> list:
    """Every rank's `obj`, in rank order."""
    import torch.distributed as tdist

    out = [None] * tdist.get_world_size()
    tdist.all_gather_object(out, obj)
    return out


def check_agree(value, what: str) -> None:
    """Raise unless every rank holds the same value (e.g. the checkpoint step each one resumes from)."""
    values = all_gather(value)
    if len(set(map(repr, values))) > 1:
        raise RuntimeError(f"ranks disagree on {what}: {values} (on several machines, put the checkpoint "
                           "folder on storage that every machine sees)")


def barrier() -> None:
    import torch.distributed as tdist

    tdist.barrier()
