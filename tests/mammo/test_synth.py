"""The synthetic RSNA generator: metadata distributions, phantom, DICOM files, determinism."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import dicomsdl
import numpy as np
import pandas as pd
import pydicom
import pytest
from sklearn.metrics import roc_auc_score

from mammo import contract as c
from mammo.synth.generate import (
    SMALL_SIZE,
    ImageJob,
    OutputNotEmptyError,
    SynthConfig,
    SynthConfigError,
    SynthSummary,
    frame_size,
    generate,
    image_jobs,
    synth_image,
)
from mammo.synth.metadata import (
    MACHINES,
    MetadataError,
    build_metadata,
    machine_profile,
    machine_table,
    planted_phi,
)
from mammo.synth.phantom import (
    MIN_WINDOW_WIDTH,
    PhantomError,
    display_window,
    render_breast,
    to_stored,
)

J2K, SV1 = "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.70"


# --- metadata ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def meta() -> tuple[pd.DataFrame, pd.DataFrame]:
    m = build_metadata(seed=3, train_patients=400, test_patients=60)
    return m.train, m.test


def profiles(frame: pd.DataFrame, attribute: str) -> pd.Series:
    return frame[c.MACHINE_ID].map(lambda m: getattr(machine_profile(m), attribute))


def test_train_csv_has_the_rsna_columns_and_sane_distributions(
    meta: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, _ = meta
    assert tuple(train.columns) == c.TRAIN_COLUMNS
    assert train[c.PATIENT_ID].nunique() == 400
    assert train[c.IMAGE_ID].is_unique
    assert train[c.PATIENT_ID].is_monotonic_increasing
    per_patient = train.groupby(c.PATIENT_ID).size()
    assert per_patient.min() >= 4 and per_patient.max() <= 14
    assert 0.55 <= (per_patient == 4).mean() <= 0.85
    views = train.groupby(c.PATIENT_ID)[[c.LATERALITY, c.VIEW]].apply(
        lambda g: {"LCC", "LMLO", "RCC", "RMLO"} <= set(g[c.LATERALITY] + g[c.VIEW])
    )
    assert views.all()
    machines = train[c.MACHINE_ID].value_counts(normalize=True)
    assert machines.index[0] == 49 and 0.33 <= machines[49] <= 0.53
    assert set(machines.index) <= {21, 29, 48, 49, 93, 170, 190, 197, 210, 216}
    sites = train[c.SITE_ID].value_counts()
    assert set(sites.index) == {1, 2} and sites[1] > sites[2]
    assert 0.12 <= (profiles(train, "voi_lut_function") == "SIGMOID").mean() <= 0.32
    assert set(profiles(train, "transfer_syntax")) == {J2K, SV1}
    assert set(profiles(train, "photometric")) == {"MONOCHROME1", "MONOCHROME2"}
    age = train[c.AGE].dropna()
    assert age.between(26, 89).all() and 55 <= age.mean() <= 62
    assert 0.35 <= train[c.DENSITY].notna().mean() <= 0.7
    assert set(train[c.DENSITY].dropna()) == set(c.DENSITIES)
    assert 0.35 <= train[c.BIRADS].notna().mean() <= 0.6
    assert set(train[c.BIRADS].dropna()) == set(c.BIRADS_VALUES)
    assert train[c.IMPLANT].mean() < 0.08


def test_labels_are_constant_within_a_breast_and_consistent(
    meta: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, _ = meta
    per_breast = train.groupby([c.PATIENT_ID, c.LATERALITY])
    labels = [c.CANCER, c.BIOPSY, c.INVASIVE, c.BIRADS, c.DIFFICULT_NEGATIVE]
    assert (per_breast[labels].nunique(dropna=False) == 1).all().all()
    assert (train[c.INVASIVE] <= train[c.CANCER]).all()
    assert (train[c.CANCER] <= train[c.BIOPSY]).all()
    assert not (train[c.DIFFICULT_NEGATIVE] & (train[c.CANCER] == 1)).any()
    negatives = train[train[c.CANCER] == 0]
    assert negatives[c.DIFFICULT_NEGATIVE].any() and (negatives[c.BIOPSY] == 1).any()


@pytest.mark.parametrize(
    "rate",
    [
        pytest.param(0.0206, id="real-rate"),
        pytest.param(0.2, id="enriched-rate"),
        pytest.param(0.0, id="no-positives"),
    ],
)
def test_positive_breast_rate_follows_the_configured_rate(rate: float) -> None:
    train = build_metadata(seed=1, train_patients=300, positive_rate=rate).train
    breasts = train.groupby([c.PATIENT_ID, c.LATERALITY])[c.CANCER].max()
    assert len(breasts) == 600
    assert breasts.mean() == pytest.approx(rate, abs=0.004)


def test_test_csv_has_test_columns_only_and_an_unseen_machine(
    meta: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, test = meta
    assert tuple(test.columns) == c.TEST_COLUMNS
    assert not set(c.TRAIN_ONLY_COLUMNS) & set(test.columns)
    expected = [f"{p}_{lat}" for p, lat in zip(test[c.PATIENT_ID], test[c.LATERALITY], strict=True)]
    assert test[c.PREDICTION_ID].tolist() == expected
    assert set(test[c.MACHINE_ID]) - set(train[c.MACHINE_ID])
    assert not set(test[c.PATIENT_ID]) & set(train[c.PATIENT_ID])
    assert not set(test[c.IMAGE_ID]) & set(train[c.IMAGE_ID])


def test_metadata_is_deterministic_for_a_seed() -> None:
    a, b = build_metadata(5, 40, 5), build_metadata(5, 40, 5)
    pd.testing.assert_frame_equal(a.train, b.train)
    pd.testing.assert_frame_equal(a.test, b.test)
    assert not build_metadata(6, 40, 5).train[c.IMAGE_ID].equals(a.train[c.IMAGE_ID])


def test_machine_table_is_realistic() -> None:
    table = machine_table()
    seen = table[~table["test_only"]]
    assert seen["share"].sum() == pytest.approx(1.0)
    assert table["test_only"].any()
    assert table["rows"].between(2776, 3328).all() and table["cols"].between(2082, 2560).all()
    assert table["bits_stored"].between(12, 16).all()
    sigmoid = table[table["voi_lut_function"] == "SIGMOID"]
    assert (sigmoid["window_pairs"] >= 2).all()
    assert seen[seen["voi_lut_function"] == "SIGMOID"]["share"].sum() == pytest.approx(0.22)


def test_bad_metadata_parameters_raise() -> None:
    with pytest.raises(MetadataError):
        build_metadata(0, 0)
    with pytest.raises(MetadataError):
        build_metadata(0, 10, positive_rate=1.5)


def test_planted_phi_is_deterministic_and_matches_the_age() -> None:
    phi = planted_phi(0, 12345, 1, 61.0)
    assert phi == planted_phi(0, 12345, 1, 61.0)
    assert phi != planted_phi(0, 12346, 1, 61.0)
    assert 2020 - int(phi.patient_birth_date[:4]) in (61, 62)
    assert "^" in phi.patient_name and phi.institution_name


# --- phantom ------------------------------------------------------------------------------


def draw(seed: int, **kw: object) -> np.ndarray:
    args: dict[str, object] = dict(
        view="CC", density="B", cancer=False, faces_right=True, oddity_rate=0.0
    )
    args.update(kw)
    return render_breast(np.random.default_rng(seed), *SMALL_SIZE, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("view", "faces_right"),
    [
        pytest.param("CC", True, id="cc-chest-wall-left"),
        pytest.param("CC", False, id="cc-chest-wall-right"),
        pytest.param("MLO", True, id="mlo-chest-wall-left"),
        pytest.param("MLO", False, id="mlo-chest-wall-right"),
    ],
)
def test_breast_lies_against_the_chest_wall_side(view: str, faces_right: bool) -> None:
    img = draw(11, view=view, faces_right=faces_right)
    assert img.shape == SMALL_SIZE and img.dtype == np.float32
    assert img.min() >= 0.0 and img.max() <= 1.0
    left, right = img[:, :40].mean(), img[:, -40:].mean()
    assert (left > right + 0.2) == faces_right
    assert (right > left + 0.2) == (not faces_right)


def test_mlo_has_a_pectoral_muscle_in_the_top_chest_wall_corner() -> None:
    for seed in range(5):
        assert draw(seed, view="MLO")[:8, :8].mean() > 0.4


def test_denser_breasts_are_brighter() -> None:
    images = [draw(4, density=d) for d in c.DENSITIES]
    means = [img[img > 0.25].mean() for img in images]
    assert means == sorted(means) and means[-1] > means[0] + 0.05


def test_lesion_is_small_bright_and_inside_the_breast() -> None:
    for seed in range(6):
        negative, positive = draw(seed), draw(seed, cancer=True)
        diff = positive - negative
        assert 0 < (diff > 0.02).mean() < 0.03
        assert diff.max() > 0.2
        assert negative.flat[int(diff.argmax())] > 0.25  # tissue, not background


def test_lesion_signal_is_learnable_at_small_size() -> None:
    """A white top-hat (15 px) separates positives from negatives: a CNN can learn it."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
    scores, labels = [], []
    for i in range(40):
        cancer = i % 2 == 0
        img = draw(
            100 + i, view=("CC", "MLO")[i // 2 % 2], density="ABCD"[i // 4 % 4], cancer=cancer
        )
        scores.append(float(cv2.morphologyEx(img, cv2.MORPH_TOPHAT, kernel).max()))
        labels.append(cancer)
    assert roc_auc_score(labels, scores) >= 0.9


def test_oddities_add_stripes_and_bright_background() -> None:
    odd, plain = draw(2, oddity_rate=1.0), draw(2)
    assert np.median(plain[:, -5:]) < 0.05 < 0.1 < np.median(odd[:, -5:])  # background
    diff = odd - plain
    assert (diff.min(axis=0) > 0.1).any() or (diff.min(axis=1) > 0.1).any()  # a full stripe


@pytest.mark.parametrize(
    ("bits", "photometric"),
    [
        pytest.param(12, "MONOCHROME2", id="12bit-mono2"),
        pytest.param(12, "MONOCHROME1", id="12bit-mono1-inverted"),
        pytest.param(14, "MONOCHROME2", id="14bit-mono2"),
        pytest.param(16, "MONOCHROME1", id="16bit-mono1-inverted"),
    ],
)
def test_stored_values_and_window_show_the_tissue(bits: int, photometric: str) -> None:
    img = draw(7, view="MLO", density="C")
    stored = to_stored(img, bits, photometric, np.random.default_rng(0))
    top = 2**bits - 1
    assert stored.dtype == np.uint16 and int(stored.max()) <= top
    inverted = photometric == "MONOCHROME1"
    corr = np.corrcoef(img.ravel(), stored.ravel())[0, 1]
    assert (corr < -0.99) if inverted else (corr > 0.99)
    centers, widths = display_window(img, bits, photometric, pairs=3)
    assert len(centers) == len(widths) == 3 and min(widths) >= MIN_WINDOW_WIDTH
    shown = np.clip((stored - centers[0]) / widths[0] + 0.5, 0, 1)  # linear window
    if inverted:
        shown = 1 - shown
    assert shown[img < 0.1].mean() < 0.1
    assert 0.2 < np.median(shown[img > 0.25]) < 0.8


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: draw(0, density="E"), id="unknown-density"),
        pytest.param(lambda: draw(0, view="XCCL"), id="unknown-view"),
        pytest.param(
            lambda: render_breast(
                np.random.default_rng(0),
                16,
                16,
                view="CC",
                density=None,
                cancer=False,
                faces_right=True,
            ),
            id="frame-too-small",
        ),
        pytest.param(
            lambda: to_stored(draw(0), 17, "MONOCHROME2", np.random.default_rng(0)),
            id="bits-over-16",
        ),
        pytest.param(
            lambda: to_stored(draw(0), 12, "RGB", np.random.default_rng(0)), id="rgb-photometric"
        ),
    ],
)
def test_bad_phantom_parameters_raise(call: object) -> None:
    with pytest.raises(PhantomError):
        call()  # type: ignore[operator]


# --- generated sets -----------------------------------------------------------------------

SMALL = SynthConfig(patients=6, seed=9, with_test=True, test_patients=2, workers=1)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthSummary]:
    out = tmp_path_factory.mktemp("synth") / "raw"
    calls: list[tuple[int, int]] = []
    summary = generate(out, SMALL, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (summary.images + summary.test_images,) * 2
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    return out, summary


def all_jobs(out: Path, cfg: SynthConfig) -> list[ImageJob]:
    meta = build_metadata(cfg.seed, cfg.patients, cfg.n_test_patients, cfg.positive_rate)
    return [*image_jobs(c.Subset.TRAIN, meta.train), *image_jobs(c.Subset.TEST, meta.test_truth)]


def test_every_csv_row_has_its_file_and_every_file_its_row(
    small_set: tuple[Path, SynthSummary],
) -> None:
    out, summary = small_set
    train = pd.read_csv(out / c.csv_name(c.Subset.TRAIN))
    test = pd.read_csv(out / c.csv_name(c.Subset.TEST))
    assert tuple(train.columns) == c.TRAIN_COLUMNS and tuple(test.columns) == c.TEST_COLUMNS
    expected = {
        c.image_relpath(subset, p, i)
        for subset, frame in ((c.Subset.TRAIN, train), (c.Subset.TEST, test))
        for p, i in zip(frame[c.PATIENT_ID], frame[c.IMAGE_ID], strict=True)
    }
    found = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    # no temporary files left over
    assert found == expected | {"train.csv", "test.csv", c.SYNTHETIC_MARKER, c.SYNTHETIC_ORACLE}
    assert summary.images == len(train) and summary.test_images == len(test)
    assert summary.patients == 6 and summary.test_patients == 2
    assert sum(summary.by_transfer_syntax.values()) == len(expected)
    assert summary.positive_images == int(train[c.CANCER].sum())


def test_dicoms_decode_bit_exactly_and_carry_the_planted_phi(
    small_set: tuple[Path, SynthSummary],
) -> None:
    out, summary = small_set
    for job in all_jobs(out, SMALL):
        path = out / c.image_relpath(job.subset, job.patient_id, job.image_id)
        expected = synth_image(job, SMALL.seed, SMALL.image_size)
        ds = pydicom.dcmread(path)
        np.testing.assert_array_equal(ds.pixel_array, expected.pixels)
        np.testing.assert_array_equal(
            dicomsdl.open(str(path)).pixelData(storedvalue=True), expected.pixels
        )
        machine = machine_profile(job.machine_id)
        assert ds.file_meta.TransferSyntaxUID == machine.transfer_syntax
        assert ds.PhotometricInterpretation == machine.photometric
        assert ds.BitsStored == machine.bits_stored
        assert ds.get("VOILUTFunction") == machine.voi_lut_function
        widths = ds.WindowWidth if machine.window_pairs > 1 else [ds.WindowWidth]
        assert len(widths) == machine.window_pairs and min(widths) >= MIN_WINDOW_WIDTH
        assert (ds.Rows, ds.Columns) == SMALL_SIZE
        assert ds.ImageLaterality == job.laterality and ds.ViewPosition == job.view
        phi = planted_phi(SMALL.seed, job.patient_id, job.site_id, job.age)
        assert str(ds.PatientName) == phi.patient_name
        assert ds.PatientBirthDate == phi.patient_birth_date
        assert ds.InstitutionName == phi.institution_name
        assert ds.AccessionNumber == phi.accession_number
        assert str(ds.ReferringPhysicianName) == phi.referring_physician_name
        assert set(phi.values()) <= summary.planted_phi


def test_same_config_gives_byte_identical_files_whatever_the_workers(
    small_set: tuple[Path, SynthSummary], tmp_path: Path
) -> None:
    out, _ = small_set
    again = generate(tmp_path / "again", SMALL)
    two_workers = generate(tmp_path / "two", replace(SMALL, workers=2))
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for other in (again.out_dir, two_workers.out_dir):
        assert sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file()) == files
        for rel in files:
            assert (other / rel).read_bytes() == (out / rel).read_bytes(), rel


def test_breast_side_is_independent_of_the_laterality_tag() -> None:
    meta = build_metadata(seed=2, train_patients=12)
    sides = []
    for job in image_jobs(c.Subset.TRAIN, meta.train):
        pixels = synth_image(job, 2, "small").pixels.astype(float)
        if machine_profile(job.machine_id).photometric == "MONOCHROME1":
            pixels = pixels.max() - pixels
        sides.append((job.laterality, pixels[:, :40].mean() > pixels[:, -40:].mean()))
    for laterality in "LR":
        on_left = [left for lat, left in sides if lat == laterality]
        assert 0 < sum(on_left) < len(on_left)


@pytest.mark.parametrize(
    ("image_size", "machine_id", "expected"),
    [
        pytest.param("small", 21, SMALL_SIZE, id="small"),
        pytest.param("320x240", 21, (320, 240), id="explicit"),
        pytest.param("full", 49, (2776, 2082), id="full-machine-49"),
        pytest.param("full", 21, (3328, 2560), id="full-machine-21"),
    ],
)
def test_image_size_options(image_size: str, machine_id: int, expected: tuple[int, int]) -> None:
    assert frame_size(image_size, machine_profile(machine_id)) == expected


def test_explicit_and_full_sizes_are_drawn_at_that_size(tmp_path: Path) -> None:
    summary = generate(tmp_path / "raw", SynthConfig(patients=1, image_size="96x80", workers=1))
    for path in (tmp_path / "raw").rglob("*.dcm"):
        assert pydicom.dcmread(path).pixel_array.shape == (96, 80)
    assert summary.images >= 4
    job = ImageJob(c.Subset.TRAIN, 1, 2, "L", "CC", 60.0, 1, 49, False, None, False)
    assert synth_image(job, 0, "full").pixels.shape == (2776, 2082)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"patients": 0}, id="no-patients"),
        pytest.param({"positive_rate": 1.5}, id="rate-over-one"),
        pytest.param({"image_size": "big"}, id="unknown-size-name"),
        pytest.param({"image_size": "10x10"}, id="size-too-small"),
        pytest.param({"workers": 0}, id="no-workers"),
        pytest.param({"with_test": True, "test_patients": 0}, id="empty-test-set"),
        pytest.param({"difficulty": "hard"}, id="unknown-difficulty"),
    ],
)
def test_bad_configs_raise(kwargs: dict[str, object]) -> None:
    with pytest.raises(SynthConfigError):
        SynthConfig(**kwargs)  # type: ignore[arg-type]


def test_config_defaults() -> None:
    cfg = SynthConfig(patients=50, with_test=True)
    assert cfg.n_test_patients == 5 and cfg.n_workers >= 1
    assert SynthConfig(patients=5, with_test=True).n_test_patients == 2
    assert SynthConfig(patients=50).n_test_patients == 0
    assert {m.machine_id for m in MACHINES} >= {21, 29, 48, 49, 93, 170, 190, 197, 210, 216}


def test_generate_refuses_a_non_empty_output(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(OutputNotEmptyError):
        generate(tmp_path, SynthConfig(patients=1, workers=1))
