"""One Great Expectations Data Docs site under OUT that lists every night's gates.

GX renders a site from a results store: each gate brings the site and the stored results of
earlier runs from OUT (``validation/data-docs/`` and ``validation/gx-results/``) into a
scratch directory, runs its suites there (GX adds this run's results and pages and rebuilds
the index) and publishes back what changed. The site keeps the last
:data:`~mammo.contract.DATA_DOCS_RUNS` gate runs; older results are dropped first, and GX
removes their pages when it rebuilds the index. A site that cannot be read, built or written
is logged: the validation stands without it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from mammo import contract as c
from tasks.gx_context import data_docs_site
from tasks.logs import run_logger
from tasks.storage import Store, join_uri, open_store

SITE_PARTS = ("index.html", "validations/", "expectations/", "static/")  # what GX writes


@contextmanager
def data_docs(data: str, label: str) -> Iterator[list[str]]:
    """Suites run in the block are added to OUT's Data Docs site under the run name
    ``<time>-<label>``; the list yields the site's index.html once published."""
    where: list[str] = []
    run_name = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{label}"
    with tempfile.TemporaryDirectory() as tmp:
        site, results = Path(tmp, "site"), Path(tmp, "results")
        try:
            out = open_store(data)
            before = _fetch(out, c.DATA_DOCS_DIR, site, SITE_PARTS)
            before |= _fetch(out, c.GX_RESULTS_DIR, results, ("",))
            _keep_last_runs(results, c.DATA_DOCS_RUNS - 1)
        except Exception as exc:  # noqa: BLE001 - the HTML report is informative
            run_logger().warning("could not read the Data Docs under %s: %s", data, exc)
            yield where
            return
        with data_docs_site(site, results, run_name):
            yield where
        try:
            _publish(out, {c.DATA_DOCS_DIR: site, c.GX_RESULTS_DIR: results}, before)
            if (site / "index.html").is_file():
                where.append(join_uri(out.uri, f"{c.DATA_DOCS_DIR}/index.html"))
                run_logger().info("Great Expectations Data Docs: %s", where[0])
        except Exception as exc:  # noqa: BLE001 - the HTML report is informative
            run_logger().warning("could not write the Data Docs under %s: %s", data, exc)


def _fetch(out: Store, prefix: str, into: Path, parts: tuple[str, ...]) -> dict[str, bytes]:
    """Copy OUT's files under ``prefix`` (those starting with one of ``parts``) into
    ``into``; return them by their OUT path."""
    fetched = {}
    for info in out.list_files(f"{prefix}/"):
        relpath = info.relpath[len(prefix) + 1 :]
        if relpath.startswith(parts):
            data = out.read_bytes(info.relpath)
            (into / relpath).parent.mkdir(parents=True, exist_ok=True)
            (into / relpath).write_bytes(data)
            fetched[info.relpath] = data
    return fetched


def _keep_last_runs(results: Path, keep: int) -> None:
    """Delete the stored results of all but the newest ``keep`` runs (a result is
    ``<suite, a folder per dotted part>/<run name>/<run time>/<batch>.json``)."""
    files = list(results.rglob("*.json"))
    started: dict[str, str] = {}
    for f in files:
        started[f.parts[-3]] = min(started.get(f.parts[-3], f.parts[-2]), f.parts[-2])
    runs = sorted(started, key=started.__getitem__)
    old = set(runs[: max(len(runs) - keep, 0)])
    for path in files:
        if path.parts[-3] in old:
            path.unlink()


def _publish(out: Store, directories: dict[str, Path], before: dict[str, bytes]) -> None:
    """Write each directory's new or changed files under its OUT prefix; delete the files
    that were fetched and are gone (old runs' results and pages)."""
    now = {
        f"{prefix}/{path.relative_to(local).as_posix()}": path
        for prefix, local in directories.items()
        for path in local.rglob("*")
        if path.is_file()
    }
    for relpath, path in sorted(now.items(), key=lambda item: item[0].endswith("index.html")):
        data = path.read_bytes()
        if before.get(relpath) != data:
            out.write_bytes(relpath, data)
    for relpath in sorted(set(before) - set(now)):
        out.delete(relpath)
