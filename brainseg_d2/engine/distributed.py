"""Multi-process start and DDP wrapping that also work on CPU-only machines.

Detectron2's ``launch`` and ``create_ddp_model`` assume GPUs in some versions:
v0.6's ``launch`` asserts CUDA and uses NCCL, and every version's
``create_ddp_model`` passes ``device_ids`` for CPU models, which
``DistributedDataParallel`` rejects. The plugin uses the two functions here
instead, so that CPU multi-process (gloo) training behaves the same with any
Detectron2 install (the Python-only v0.6 fallback or a build of upstream main).
On GPU machines both defer to Detectron2 unchanged.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import socket
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import create_ddp_model as _d2_create_ddp_model
from detectron2.engine import launch as _d2_launch
from detectron2.utils import comm

__all__ = ["DEFAULT_TIMEOUT", "create_ddp_model", "launch"]

#: Same default as Detectron2's ``launch``.
DEFAULT_TIMEOUT = timedelta(minutes=30)


def create_ddp_model(model: torch.nn.Module, **kwargs) -> torch.nn.Module:
    """Detectron2's ``create_ddp_model``, without CUDA ``device_ids`` for CPU models.

    Args:
        model: the model; wrapped in ``DistributedDataParallel`` only when there
            are several processes.
        kwargs: passed to Detectron2's ``create_ddp_model`` (``fp16_compression``,
            DDP arguments).

    Returns:
        ``model`` itself in a single process, else the DDP wrapper.
    """
    if comm.get_world_size() > 1 and "device_ids" not in kwargs:
        if not next(model.parameters()).is_cuda:
            kwargs["device_ids"] = None  # DDP accepts device ids for CUDA modules only
    return _d2_create_ddp_model(model, **kwargs)


def launch(
    main_func,
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = None,
    args: tuple = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> None:
    """Detectron2's ``launch``; without CUDA, worker processes use the gloo backend.

    Args:
        main_func: called as ``main_func(*args)`` in every process.
        num_gpus_per_machine: processes per machine (GPUs, or CPU workers).
        num_machines, machine_rank, dist_url, args, timeout: as in Detectron2's
            ``launch``; ``dist_url="auto"`` picks a free local port.

    Raises:
        ValueError: fewer than one process per machine, or than one machine.
    """
    if num_gpus_per_machine < 1 or num_machines < 1:  # else nothing runs, and says nothing
        raise ValueError(
            f"--num-gpus and --num-machines must be at least 1, got {num_gpus_per_machine} "
            f"and {num_machines}"
        )
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1 or torch.cuda.is_available():
        _d2_launch(
            main_func, num_gpus_per_machine, num_machines=num_machines,
            machine_rank=machine_rank, dist_url=dist_url, args=args, timeout=timeout,
        )
        return
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError("dist_url='auto' works on one machine only; pass tcp://HOST:PORT")
        dist_url = f"tcp://127.0.0.1:{_free_port()}"
    mp.start_processes(
        _cpu_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
        start_method="spawn",
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _cpu_worker(
    local_rank: int,
    main_func,
    world_size: int,
    procs_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: tuple,
    timeout: timedelta,
) -> None:
    rank = machine_rank * procs_per_machine + local_rank
    dist.init_process_group(
        backend="gloo", init_method=dist_url, world_size=world_size, rank=rank, timeout=timeout
    )
    _create_local_process_group(procs_per_machine)
    comm.synchronize()
    try:
        main_func(*args)
        comm.synchronize()  # no process leaves while another still talks to it
    finally:
        dist.destroy_process_group()  # joins gloo's threads while the process is whole
    _exit_without_teardown()


def _exit_without_teardown() -> None:
    """End a worker whose work is done with status 0, skipping interpreter teardown.

    The C++ destructors that run at interpreter exit (torch.distributed's and
    gloo's) occasionally abort a CPU worker that finished its work ("terminate
    called without an active exception", SIGABRT), which fails a run that
    succeeded. What a normal exit would still do is done first: child processes
    end as Python's exit handlers end them (daemonic ones, such as data-loader
    workers, are terminated; others are waited for), log handlers are flushed
    and closed (Detectron2's log files are buffered), the standard streams are
    flushed.
    """
    gc.collect()  # objects in reference cycles (a trainer and its data loader) close now
    for child in multiprocessing.active_children():
        if child.daemon:
            child.terminate()
        child.join()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _create_local_process_group(procs_per_machine: int) -> None:
    """The per-machine group behind ``comm.get_local_rank()``, as Detectron2's workers make it."""
    if hasattr(comm, "create_local_process_group"):  # Detectron2 after v0.6
        comm.create_local_process_group(procs_per_machine)
        return
    machine = comm.get_rank() // procs_per_machine
    for i in range(comm.get_world_size() // procs_per_machine):
        group = dist.new_group(list(range(i * procs_per_machine, (i + 1) * procs_per_machine)))
        if i == machine:
            comm._LOCAL_PROCESS_GROUP = group  # v0.6 has no public setter
