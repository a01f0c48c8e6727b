"""mammo: the pure domain library of the pipeline.

DICOM reading, pixel normalization, the data contract, splits, models, the
training loop and metrics. Nothing here imports Prefect, Ray, boto3, MLflow or
Great Expectations (tests/mammo/test_purity.py proves it); the orchestration
shell lives in ``tasks/`` and ``flows/``.
"""

__version__ = "0.1.0"
