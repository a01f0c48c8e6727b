"""Training input: images/s of training steps fed by the real data path, against the same
model fed tensors that are already in memory; the gap is the data stall.

Real path: ingest shards -> ``tasks.train_data.build_dataset`` (Ray Data reads the PNG
column and decodes/resizes, materialized) -> one Ray Train worker: ``dataset_arrays`` of its
shard -> each epoch, the batches of ``tasks.train_loop`` (``_epoch_indices``, ``_batch``)
through ``mammo.training.train_epoch``. In-memory path, in the same worker, with the same
model initialization, batch indices, augmentation seed and torch threads: each epoch's
batches are built as float tensors before the clock starts. One untimed step on a throwaway
model comes first, so neither path pays torch's first-call costs.

The loop keeps the arrays in worker memory after the first pass (dataset_arrays), so the
first epoch and the later ones are reported apart:

    real first epoch images/s = images of epoch 1 / (build_dataset + dataset_arrays + epoch 1 s)
    real steady images/s      = images of epochs 2.. / seconds of epochs 2..
    in-memory images/s        = images of all epochs / seconds of all epochs
    data stall                = 1 - real images/s / in-memory images/s   (target <= 10% on CPU)

    python -m benchmarks.train_input --patients 40 --epochs 3
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import (
    BenchmarkError,
    Result,
    base_parser,
    finish,
    prepare_environment,
    ray_cores,
    run_ingest,
    synth_set,
)
from mammo import contract as c
from mammo.synth.generate import SynthConfig
from mammo.training import (
    Batch,
    Target,
    TrainConfig,
    build_model,
    images_to_tensor,
    make_grad_scaler,
    make_optimizer,
    train_epoch,
    train_step,
)

NAME = "train_input"
REPORT_FILE = "report.json"


def _timed_epochs(
    cfg: TrainConfig,
    target: Target,
    plans: list[list[np.ndarray]],
    batches_of: Callable[[list[np.ndarray]], Iterable[Batch]],
    device: torch.device,
) -> list[float]:
    """Seconds of train_epoch for each epoch's batches, from a fresh model of cfg.seed."""
    model = build_model(cfg, target).to(device)
    optimizer = make_optimizer(model, cfg)
    scaler = make_grad_scaler(cfg.amp, device)
    loss_fn = target.loss_fn()
    generator = torch.Generator().manual_seed(cfg.seed)
    augment = cfg.augment if cfg.augment.enabled else None
    seconds = []
    for plan in plans:
        batches = batches_of(plan)  # a generator for the real path, a list in memory
        started = time.perf_counter()
        train_epoch(model, batches, optimizer, loss_fn, scaler, device, augment, generator)
        seconds.append(time.perf_counter() - started)
    return seconds


def measure_loop(config: dict[str, Any]) -> None:
    """Runs in the Ray Train worker: times both paths and reports the seconds."""
    import ray.train
    import ray.train.torch

    from tasks.train_data import IMAGE, LABEL, dataset_arrays
    from tasks.train_loop import _batch, _epoch_indices  # the loop's own batching code

    cfg = TrainConfig.from_dict(config["train"])
    target = Target.for_column(cfg.target)
    torch.set_num_threads(int(config["threads"]))
    device = ray.train.torch.get_device()

    started = time.perf_counter()
    arrays = dataset_arrays(ray.train.get_dataset_shard("train"))
    arrays_s = time.perf_counter() - started
    if not arrays or not len(arrays[LABEL]):
        raise BenchmarkError("the training worker's dataset shard is empty")
    steps = config["max_steps"]
    plans = [
        _epoch_indices(arrays[LABEL], cfg, target, 0, epoch)[:steps] for epoch in range(cfg.epochs)
    ]
    warm = build_model(cfg, target).to(device)
    train_step(
        warm, _batch(arrays, plans[0][0]), make_optimizer(warm, cfg), target.loss_fn(), None, device
    )

    real = _timed_epochs(cfg, target, plans, lambda p: (_batch(arrays, i) for i in p), device)
    images = images_to_tensor(arrays[IMAGE])  # (N, H, W) uint8 -> (N, 1, H, W) float32
    labels = torch.from_numpy(np.asarray(arrays[LABEL]))

    def prebuilt(plan: list[np.ndarray]) -> list[Batch]:
        return [Batch(images[torch.from_numpy(i)], labels[torch.from_numpy(i)]) for i in plan]

    memory = _timed_epochs(cfg, target, plans, prebuilt, device)
    metrics = {
        "rows": len(arrays[LABEL]),
        "dataset_arrays_s": arrays_s,
        "images_per_epoch": [int(sum(len(i) for i in plan)) for plan in plans],
        "steps_per_epoch": [len(plan) for plan in plans],
        "real_epoch_s": real,
        "memory_epoch_s": memory,
    }
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / REPORT_FILE).write_text(json.dumps(metrics))
        # Ray Train V2 keeps only reports that carry a checkpoint in Result.metrics
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def run_trainer(
    dataset: Any, cfg: TrainConfig, cpus: int, max_steps: int | None, storage: Path
) -> dict[str, Any]:
    """One CPU Ray Train worker running :func:`measure_loop`; returns its report."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        measure_loop,
        train_loop_config={"train": cfg.to_dict(), "threads": cpus, "max_steps": max_steps},
        scaling_config=ScalingConfig(
            num_workers=1, use_gpu=False, resources_per_worker={"CPU": cpus}
        ),
        run_config=RunConfig(
            name=f"bench-train-input-{uuid.uuid4().hex[:8]}", storage_path=str(storage)
        ),
        datasets={"train": dataset},
    )
    result = trainer.fit()
    if result.error is not None or not result.metrics:
        raise BenchmarkError(f"the training worker reported nothing: {result.error}")
    return dict(result.metrics)


def measure(
    raw: Path,
    cache_dir: Path,
    cfg: TrainConfig,
    max_steps: int | None,
    cpus: int | None,
    smoke: bool,
) -> Result:
    from tasks.storage import open_store, read_parquet
    from tasks.train_data import build_dataset, quiet_ray_data, split_rows

    if cfg.epochs < 2:
        raise BenchmarkError("need at least 2 epochs: the first one and a steady-state one")
    target = Target.for_column(cfg.target)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        work = Path(tmp)
        ingest = run_ingest(raw, work / "out", shard_size=64)  # Prefect + Ray start here too
        store = open_store(str(work / "out"))
        frame = read_parquet(store, c.MANIFEST_FILE).to_pandas()
        frame = frame[target.labeled(frame)].reset_index(drop=True)
        quiet_ray_data()
        wanted = split_rows(frame, target, None, cfg.image_rows, cfg.image_cols)
        started = time.perf_counter()
        dataset = build_dataset(store, frame, wanted)
        build_s = time.perf_counter() - started
        worker_cpus = cpus or max(1, ray_cores() - 1)  # leave Ray Data a CPU (docs/training.md)
        started = time.perf_counter()
        report = run_trainer(dataset, cfg, worker_cpus, max_steps, work / "ray-train")
        fit_s = time.perf_counter() - started
    images, real, memory = (
        report["images_per_epoch"],
        report["real_epoch_s"],
        report["memory_epoch_s"],
    )
    first_s = build_s + report["dataset_arrays_s"] + real[0]
    real_first = images[0] / first_s
    real_steady = sum(images[1:]) / sum(real[1:])
    in_memory = sum(images) / sum(memory)
    table = [
        {"epoch": e + 1, "images": n, "steps": s, "real_s": r, "in_memory_s": m}
        for e, (n, s, r, m) in enumerate(
            zip(images, report["steps_per_epoch"], real, memory, strict=True)
        )
    ]
    return Result(
        name=NAME,
        smoke=smoke,
        params={
            "raw": str(raw),
            "rows": report["rows"],
            "model": cfg.model,
            "image": f"{cfg.image_rows}x{cfg.image_cols}",
            "batch_size": cfg.batch_size,
            "epochs": cfg.epochs,
            "max_steps": max_steps,
            "worker_cpus": worker_cpus,
            "augment": cfg.augment.enabled,
        },
        table=table,
        summary={
            "real_first_epoch_images_per_s": real_first,
            "real_steady_images_per_s": real_steady,
            "in_memory_images_per_s": in_memory,
            "data_stall_first_epoch": 1 - real_first / in_memory,
            "data_stall_steady": 1 - real_steady / in_memory,
            "build_dataset_s": build_s,
            "dataset_arrays_s": report["dataset_arrays_s"],
            "trainer_fit_s": fit_s,
            "ingest_s": ingest.seconds,
        },
        formulas={
            "real_first_epoch_images_per_s": "images of epoch 1 / (build_dataset_s + "
            "dataset_arrays_s + real_s of epoch 1)",
            "real_steady_images_per_s": "images of epochs 2.. / real_s of epochs 2..",
            "in_memory_images_per_s": "images of all epochs / in_memory_s of all epochs",
            "data_stall_*": "1 - real images/s / in-memory images/s (target <= 0.10 on CPU)",
        },
        notes=[
            "trainer_fit_s also holds Ray Train's start-up; it is in neither throughput.",
            "Both paths run in the same Ray Train worker, one after the other.",
        ],
    )


def main(argv: Sequence[str] | None = None) -> Result:
    parser = base_parser(NAME, "Data stall of the training input path against in-memory tensors.")
    parser.add_argument("--patients", type=int, default=None, help="default 40 (smoke: 3)")
    parser.add_argument("--image-size", default="small", help="size of the ingested DICOMs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument(
        "--rows", type=int, default=None, help="training image rows (512; smoke 64)"
    )
    parser.add_argument(
        "--cols", type=int, default=None, help="training image cols (256; smoke 32)"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="default 32 (smoke: 4)")
    parser.add_argument("--epochs", type=int, default=3, help="at least 2")
    parser.add_argument("--max-steps", type=int, default=None, help="steps per epoch (default all)")
    parser.add_argument("--worker-cpus", type=int, default=None, help="default: cluster CPUs - 1")
    args = parser.parse_args(argv)
    prepare_environment()
    cfg = TrainConfig(
        model=args.model,
        image_rows=args.rows or (64 if args.smoke else 512),
        image_cols=args.cols or (32 if args.smoke else 256),
        batch_size=args.batch_size or (4 if args.smoke else 32),
        epochs=args.epochs,
        seed=args.seed,
    )
    patients = args.patients or (3 if args.smoke else 40)
    synth = SynthConfig(patients=patients, seed=args.seed, image_size=args.image_size)
    raw = synth_set(args.cache_dir, "train-input", synth)
    result = measure(raw, args.cache_dir, cfg, args.max_steps, args.worker_cpus, args.smoke)
    return finish(result, args.results_dir)


if __name__ == "__main__":
    main()
