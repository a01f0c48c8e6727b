"""Model quality against a known ceiling: each training recipe on the same realistic set,
scored on the same held-out breasts as the known-signal oracle (mammo/oracle.py).

The set: ``mammo synth --difficulty realistic`` at an enriched prevalence, ingested by the
real ingest flow (Prefect + Ray), split by patient (mammo/splits.py): a test share that
nothing trains or tunes on, a validation share that picks each recipe's epoch and its
F1 threshold, the rest to train. Each recipe trains in this process with the pieces the
nightly loop composes (mammo.training: sampling, augmentation, train_epoch) from the same
seed; an exponential moving average of its weights is kept beside it. Each trained recipe
is then scored four ways: its best-validation weights (views averaged per breast, or their
maximum), with test-time vertical flips, and the EMA weights.

    test AUC          = breast-level ROC AUC on the test breasts, 95% DeLong interval
    ratio_to_oracle   = test AUC / the oracle's breast-level AUC on the same breasts
    delta_vs_baseline = test AUC - baseline's (mean of views) on the same breasts, paired DeLong
    pf1               = probabilistic F1 of the breast probabilities (the competition metric)
    f1_at_val_thr     = F1 on test at the threshold that maximizes F1 on validation
    s_per_epoch       = wall seconds of one epoch's optimizer steps (no validation)
    train_images_per_s = training images of all epochs / their seconds

    python -m benchmarks.model_quality
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmarks.common import (
    COMPLETE_MARKER,
    BenchmarkError,
    Result,
    base_parser,
    finish,
    prepare_environment,
    run_ingest,
    synth_set,
)
from mammo import contract as c
from mammo.auxiliary import aux_labels, aux_targets, stack_labels, training_loss
from mammo.metrics import Aggregation, aggregate_breasts, best_threshold_f1, probabilistic_f1
from mammo.oracle import ORACLE, oracle_auc
from mammo.roc import delong_auc, paired_delong
from mammo.sampling import epoch_batches
from mammo.splits import Split, SplitConfig, assign_splits
from mammo.synth.generate import SynthConfig
from mammo.training import (
    EarlyStopping,
    Target,
    TrainConfig,
    build_model,
    make_batch,
    make_optimizer,
    predict_batches,
    train_epoch,
    weight_ema,
)

NAME = "model_quality"
CPU = torch.device("cpu")
EVAL_BATCH = 64
PROB = "probability"
AUX_COLUMNS = (c.BIRADS, c.DENSITY, c.DIFFICULT_NEGATIVE)  # what the aux recipe can learn


@dataclass(frozen=True)
class Recipe:
    name: str
    what: str
    overrides: dict[str, Any]  # TrainConfig fields over the benchmark's base config


RECIPES = (
    Recipe("baseline", "nightly default: small_cnn, balanced batches, augmentation", {}),
    Recipe("no_augment", "baseline without augmentation", {"augment": {"enabled": False}}),
    Recipe("oversample", "baseline, positives oversampled to 1 in 8", {"sampler": "oversample"}),
    Recipe("resnet18", "baseline with a ResNet-18 backbone", {"model": "resnet18"}),
    Recipe(
        "aux",
        "baseline with BIRADS, density and difficult-negative heads (training only)",
        {"aux_targets": [c.BIRADS, c.DENSITY, c.DIFFICULT_NEGATIVE]},
    ),
)
DEFAULT_RECIPES = ("baseline", "no_augment", "oversample")  # resnet18: ~5 images/s on 2 cores


@dataclass(frozen=True)
class Scoring:
    name: str
    ema: bool
    vflip: bool
    how: Aggregation


SCORINGS = (
    Scoring("mean", False, False, "mean"),
    Scoring("max", False, False, "max"),
    Scoring("tta", False, True, "mean"),
    Scoring("ema", True, False, "mean"),
)


@dataclass
class Part:
    """One split's rows in memory: images (N, rows, cols) uint8 and their row columns."""

    images: np.ndarray
    rows: pd.DataFrame  # image_id, patient_id, laterality, cancer, oracle, AUX_COLUMNS

    def batches(self) -> list[Any]:
        n, labels = len(self.rows), self.rows[c.CANCER].to_numpy(np.float32)
        return [
            make_batch(self.images[i : i + EVAL_BATCH], labels[i : i + EVAL_BATCH])
            for i in range(0, n, EVAL_BATCH)
        ]


def ingested(raw: Path, cache_dir: Path) -> Path:
    """OUT of the ingest flow for ``raw``, ingested once into the cache."""
    out = cache_dir / "quality-out" / raw.name
    if not (out / COMPLETE_MARKER).is_file():
        run = run_ingest(raw, out, shard_size=64)
        (out / COMPLETE_MARKER).write_text(str(run.seconds))
    return out


def load_parts(raw: Path, out: Path, rows: int, cols: int, split: SplitConfig) -> dict[Split, Part]:
    """Train, val and test (the split's holdout) decoded at rows x cols, sorted by image."""
    from tasks.storage import open_store, read_parquet
    from tasks.train_data import IMAGE, decode_batch, split_rows

    store = open_store(str(out))
    frame = read_parquet(store, c.MANIFEST_FILE).to_pandas()
    frame = frame[frame[c.CANCER].notna()].sort_values(c.IMAGE_ID, ignore_index=True)
    oracle = pd.read_csv(raw / c.SYNTHETIC_ORACLE)[[c.IMAGE_ID, ORACLE]]
    frame = frame.merge(oracle, on=c.IMAGE_ID, how="left", validate="one_to_one")
    frame[c.SPLIT] = assign_splits(frame, split, c.CANCER)
    wanted = split_rows(frame, Target.for_column(c.CANCER), None, rows, cols)
    images: dict[int, np.ndarray] = {}
    for shard in sorted(frame[c.SHARD].unique()):
        table = read_parquet(
            store,
            shard,
            columns=[c.IMAGE_ID, c.FINGERPRINT, c.PNG, c.PATIENT_ID, c.LATERALITY, c.SITE_ID],
        )
        batch = {name: table[name].to_numpy(zero_copy_only=False) for name in table.column_names}
        decoded = decode_batch(batch, wanted)
        images.update(zip(decoded[c.IMAGE_ID].tolist(), decoded[IMAGE], strict=True))
    parts = {}
    for name in Split:
        rows_of = frame[frame[c.SPLIT] == name.value].reset_index(drop=True)
        kept = rows_of[c.IMAGE_ID].isin(images)
        if not kept.all():
            raise BenchmarkError(f"{int((~kept).sum())} {name.value} images were not decoded")
        stack = np.stack([images[i] for i in rows_of[c.IMAGE_ID]])
        columns = [c.IMAGE_ID, c.PATIENT_ID, c.LATERALITY, c.CANCER, ORACLE, *AUX_COLUMNS]
        parts[name] = Part(stack, rows_of[columns].astype({c.CANCER: "int64"}))
    return parts


@dataclass
class Trained:
    weights: dict[bool, dict[str, torch.Tensor]]  # ema? -> best-validation state dict
    model: torch.nn.Module
    ema_model: torch.nn.Module
    best_epoch: dict[bool, int]
    epoch_s: list[float]  # one per epoch run
    train_images: int


def _breasts(part: Part, logits: np.ndarray, how: Aggregation) -> pd.DataFrame:
    probabilities = Target.for_column(c.CANCER).probabilities(logits)
    return aggregate_breasts(part.rows.assign(**{PROB: probabilities}), PROB, how)


def _val_auc(model: torch.nn.Module, val: Part) -> float:
    breasts = _breasts(val, predict_batches(model, val.batches(), CPU), "mean")
    return float(delong_auc(breasts[c.CANCER], breasts[PROB])[0])


def train_recipe(cfg: TrainConfig, train: Part, val: Part, ema_decay: float) -> Trained:
    """cfg.epochs of the nightly loop's steps, keeping the best validation AUC's weights of
    the model and of its EMA; stops when neither improved for cfg.early_stopping_patience."""
    target = Target.for_column(c.CANCER)
    torch.manual_seed(cfg.seed)  # dropout draws from the global generator
    model = build_model(cfg, target)
    ema = weight_ema(model, ema_decay)
    optimizer, loss_fn = make_optimizer(model, cfg), training_loss(cfg, target)
    generator = torch.Generator().manual_seed(cfg.seed)
    labels = train.rows[c.CANCER].to_numpy(np.float32)
    # with auxiliary heads, the loss takes their values beside the label (mammo/auxiliary.py)
    heads = aux_targets(cfg)
    loss_labels = stack_labels(labels, aux_labels(train.rows, heads)) if heads else labels
    # one tracker each for the model and its EMA; only the model's decides when to stop
    stoppers = {use_ema: EarlyStopping(cfg.early_stopping_patience) for use_ema in (False, True)}
    best: dict[bool, dict[str, torch.Tensor]] = {}
    best_epoch = {False: -1, True: -1}
    seconds, images = [], 0
    for epoch in range(cfg.epochs):
        plan = epoch_batches(
            labels,
            cfg.sampler,
            cfg.batch_size,
            rng=np.random.default_rng([cfg.seed, epoch]),
            target_positive_fraction=cfg.target_positive_fraction,
            min_positives=cfg.min_positives,
        )
        batches = (make_batch(train.images[i], loss_labels[i]) for i in plan)
        augment = cfg.augment if cfg.augment.enabled else None
        started = time.perf_counter()
        train_epoch(
            model,
            batches,
            optimizer,
            loss_fn,
            None,
            CPU,
            augment,
            generator,
            after_step=lambda: ema.update_parameters(model),
        )
        seconds.append(time.perf_counter() - started)
        images += int(sum(len(i) for i in plan))
        aucs = {use_ema: _val_auc(m, val) for use_ema, m in ((False, model), (True, ema))}
        stop = {use_ema: stoppers[use_ema].update(auc) for use_ema, auc in aucs.items()}
        for use_ema in aucs:
            if stoppers[use_ema].improved or use_ema not in best:
                best[use_ema] = copy.deepcopy((ema if use_ema else model).state_dict())
                best_epoch[use_ema] = epoch
        print(
            f"  epoch {epoch + 1}: {seconds[-1]:.0f} s, val AUC {aucs[False]:.3f}, "
            f"EMA {aucs[True]:.3f}"
        )
        if stop[False]:
            break
    return Trained(best, model, ema, best_epoch, seconds, images)


@dataclass(frozen=True)
class Predictions:
    """Validation and test logits of one set of weights, and the test images/s."""

    val: np.ndarray
    test: np.ndarray
    test_images_per_s: float


def predictions(trained: Trained, ema: bool, vflip: bool, val: Part, test: Part) -> Predictions:
    """Logits of the best-validation weights of the model (or of its EMA) on val and test."""
    model = trained.ema_model if ema else trained.model
    model.load_state_dict(trained.weights[ema])
    started = time.perf_counter()
    test_logits = predict_batches(model, test.batches(), CPU, vflip=vflip)
    images_per_s = len(test.rows) * (2 if vflip else 1) / (time.perf_counter() - started)
    val_logits = predict_batches(model, val.batches(), CPU, vflip=vflip)
    return Predictions(val_logits, test_logits, images_per_s)


def score(logits: Predictions, how: Aggregation, val: Part, test: Part) -> dict[str, Any]:
    val_breasts = _breasts(val, logits.val, how)
    _, threshold = best_threshold_f1(val_breasts[c.CANCER], val_breasts[PROB])
    breasts = _breasts(test, logits.test, how)
    auc, _, low, high = delong_auc(breasts[c.CANCER], breasts[PROB])
    predicted = breasts[PROB] >= threshold
    positive = breasts[c.CANCER] > 0
    tp = int((predicted & positive).sum())
    f1 = 2 * tp / (int(predicted.sum()) + int(positive.sum()) or 1)
    return {
        "auc": float(auc),
        "ci": (float(low), float(high)),
        "pf1": probabilistic_f1(breasts[c.CANCER], breasts[PROB]),
        "f1_at_val_thr": f1,
        "breasts": breasts,
        "test_images_per_s": logits.test_images_per_s,
    }


def measure(
    parts: dict[Split, Part],
    recipes: Sequence[Recipe],
    base: TrainConfig,
    ema_decay: float,
    params: dict[str, Any],
    smoke: bool,
) -> Result:
    train, val, test = parts[Split.TRAIN], parts[Split.VAL], parts[Split.HOLDOUT]
    ceiling = oracle_auc(test.rows, "mean")
    if ceiling.auc is None:
        raise BenchmarkError("the test breasts are all of one class: no AUC to report")
    table: list[dict[str, Any]] = []
    reference: pd.DataFrame | None = None
    for recipe in recipes:
        cfg = TrainConfig.from_dict({**base.to_dict(), **recipe.overrides})
        print(f"{recipe.name}: {recipe.what}")
        trained = train_recipe(cfg, train, val, ema_decay)
        cached: dict[tuple[bool, bool], Predictions] = {}  # mean and max share their logits
        for scoring in SCORINGS:
            key = (scoring.ema, scoring.vflip)
            if key not in cached:
                cached[key] = predictions(trained, *key, val, test)
            scored = score(cached[key], scoring.how, val, test)
            breasts = scored.pop("breasts")
            if reference is None:
                reference = breasts
            delta, _, d_low, d_high = paired_delong(
                breasts[c.CANCER], breasts[PROB], reference[PROB]
            )
            low, high = scored.pop("ci")
            table.append(
                {
                    "recipe": recipe.name,
                    "scoring": scoring.name,
                    "test_auc": scored["auc"],
                    "auc_95ci": f"[{low:.3f}, {high:.3f}]",
                    "ratio_to_oracle": scored["auc"] / ceiling.auc,
                    "delta_vs_baseline": delta,
                    "delta_95ci": f"[{d_low:.3f}, {d_high:.3f}]",
                    "pf1": scored["pf1"],
                    "f1_at_val_thr": scored["f1_at_val_thr"],
                    "best_epoch": trained.best_epoch[scoring.ema] + 1,
                    "epochs": len(trained.epoch_s),
                    "s_per_epoch": float(np.mean(trained.epoch_s)),
                    "train_images_per_s": trained.train_images / sum(trained.epoch_s),
                    "test_images_per_s": scored["test_images_per_s"],
                }
            )
    best = max(table, key=lambda row: row["test_auc"])
    return Result(
        name=NAME,
        smoke=smoke,
        params={
            **params,
            "recipes": {r.name: r.what for r in recipes},
            "ema_decay": ema_decay,
            "train_images": len(train.rows),
            "val_images": len(val.rows),
            "test_images": len(test.rows),
        },
        table=table,
        summary={
            "oracle_auc": ceiling.auc,
            "oracle_95ci": f"[{ceiling.ci_low:.3f}, {ceiling.ci_high:.3f}]",
            "test_breasts": ceiling.breasts,
            "test_positive_breasts": ceiling.positive_breasts,
            "best": f"{best['recipe']} / {best['scoring']}",
            "best_ratio_to_oracle": best["ratio_to_oracle"],
        },
        formulas={
            "ratio_to_oracle": "test_auc / oracle_auc (same test breasts, mean of views)",
            "delta_vs_baseline": "test_auc - baseline/mean test_auc, paired DeLong 95% interval",
            "f1_at_val_thr": "F1 on test at the threshold of the best F1 on validation",
            "train_images_per_s": "training images of all epochs / seconds of their steps",
        },
        notes=[
            "Scorings: mean/max = best-validation weights, views averaged or maxed per breast; "
            "tta = mean of the image and its vertical mirror; ema = best-validation EMA weights.",
            "The oracle knows each lesion's template and place: a reference, not a proof of a "
            "bound (mammo/oracle.py).",
        ],
    )


def main(argv: Sequence[str] | None = None) -> Result:
    parser = base_parser(NAME, "Training recipes against the known-signal oracle.")
    parser.add_argument("--patients", type=int, default=None, help="default 600 (smoke: 12)")
    parser.add_argument("--image-size", default=None, help='DICOM size (default "512x416")')
    parser.add_argument("--positive-rate", type=float, default=0.25)
    parser.add_argument("--difficulty", default="realistic")
    parser.add_argument("--rows", type=int, default=None, help="training rows (512; smoke 64)")
    parser.add_argument("--cols", type=int, default=None, help="training cols (256; smoke 32)")
    parser.add_argument("--epochs", type=int, default=None, help="at most (default 6; smoke 2)")
    parser.add_argument("--ema-decay", type=float, default=0.99)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--recipes",
        nargs="+",
        default=None,
        choices=[r.name for r in RECIPES],
        help=f"default {' '.join(DEFAULT_RECIPES)} (the first is the baseline)",
    )
    args = parser.parse_args(argv)
    prepare_environment()
    if args.threads:
        torch.set_num_threads(args.threads)
    synth = SynthConfig(
        patients=args.patients or (12 if args.smoke else 600),
        seed=args.seed,
        positive_rate=args.positive_rate,
        image_size=args.image_size or ("64x64" if args.smoke else "512x416"),
        difficulty=args.difficulty,
    )
    label = f"quality-{synth.difficulty}-r{synth.positive_rate:g}"
    raw = synth_set(args.cache_dir, label, synth)
    rows, cols = args.rows or (64 if args.smoke else 512), args.cols or (32 if args.smoke else 256)
    split = SplitConfig(holdout_fraction=0.3, val_fraction=0.2, seed=args.seed)
    parts = load_parts(raw, ingested(raw, args.cache_dir), rows, cols, split)
    base = TrainConfig(
        image_rows=rows,
        image_cols=cols,
        epochs=args.epochs or (2 if args.smoke else 6),
        seed=args.seed,
        amp=False,
    )
    names = args.recipes or DEFAULT_RECIPES
    recipes = [next(r for r in RECIPES if r.name == name) for name in names]
    params = {
        "synth": {
            "patients": synth.patients,
            "seed": synth.seed,
            "positive_rate": synth.positive_rate,
            "image_size": synth.image_size,
            "difficulty": synth.difficulty,
        },
        "image": f"{rows}x{cols}",
        "split": split.to_dict(),
        "torch_threads": torch.get_num_threads(),
        "max_epochs": base.epochs,
        "early_stopping_patience": base.early_stopping_patience,
    }
    result = measure(parts, recipes, base, args.ema_decay, params, args.smoke)
    return finish(result, args.results_dir)


if __name__ == "__main__":
    main()
