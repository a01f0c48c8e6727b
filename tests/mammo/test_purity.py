"""mammo/ is the pure domain library: it must not import the orchestration stack."""

import subprocess
import sys
from pathlib import Path

import mammo

FORBIDDEN = ("prefect", "ray", "boto3", "botocore", "s3fs", "mlflow", "great_expectations")


def test_importing_every_mammo_module_pulls_in_no_orchestration_package() -> None:
    root = Path(mammo.__file__).parent
    modules = sorted(
        ".".join(p.relative_to(root.parent).with_suffix("").parts)
        for p in root.rglob("*.py")
        if p.name != "__main__.py"
    )
    probe = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m.removesuffix('.__init__'))\n"
        f"print(sorted({{n.split('.')[0] for n in sys.modules}} & set({FORBIDDEN!r})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]", f"mammo imports orchestration packages: {out}"
    assert len(modules) > 2
