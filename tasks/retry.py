"""Which failures a Prefect task retries: the transient ones only.

A retry helps when the network, a server or the disk had a bad moment. It cannot help a
bad input, a wrong configuration or a refusal, and retrying those only delays the one
clear message a user needs: they are :data:`PERMANENT`.
"""

from __future__ import annotations

from typing import Any

from prefect.client.schemas.objects import State, TaskRun

# ValueError covers the domain's input and configuration errors (mammo.*Error, ProtocolError,
# MetadataError, TrainConfigError ...); the RuntimeErrors named here are outcomes, not faults.
PERMANENT: tuple[type[BaseException], ...] = (
    ValueError,
    KeyError,
    TypeError,
    FileNotFoundError,
    NotImplementedError,
)


def transient_only(*also_permanent: type[BaseException]) -> Any:
    """A ``retry_condition_fn``: retry unless the failure is permanent."""
    permanent = PERMANENT + also_permanent

    def retry_if_transient(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
        return not isinstance(state.data, permanent)

    return retry_if_transient
