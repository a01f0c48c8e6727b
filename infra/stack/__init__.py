"""The local stack behind ``mammo up`` / ``mammo down``: every service on loopback, with its UI.

``up`` starts, in this order, each as a background process in its own session:

1. ``s3``: moto's S3 server, then the bucket (created with boto3).
2. ``prefect-server``: ``prefect server start`` on SQLite under ``STATE/prefect``.
3. ``prefect-worker``: the ``process`` work pool, then ``prefect worker start`` with the
   stack's environment, so the flow runs it executes see ``RAY_ADDRESS``, ``AWS_*`` ...
4. ``ray``: a head node (``ray start --head``); its workers inherit the AWS variables.
5. ``mlflow``: ``mlflow server`` on SQLite, artifacts proxied to ``s3://BUCKET/mlflow``.

Each service logs to ``STATE/logs/<service>.log`` and records its session leader in
``STATE/<service>.pid``. Flows reach the stack only through the ecosystem's variables, written
to ``STATE/env.sh``. The S3 credentials there are fixed local-only values, never real ones.

Ray keeps token authentication on: its API runs arbitrary code, and loopback does not keep
other local users out. The token lives in ``STATE/ray/auth_token`` (mode 0600) and env.sh
points ``RAY_AUTH_TOKEN_PATH`` at it, so drivers, ``ray job`` and ``ray get-auth-token`` (whose
output the dashboard asks for once) use it; ``~/.ray/auth_token`` is left alone.
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps Ray from swapping 127.0.0.1 for the machine's
routable address, which would make the GCS and raylet listen on every interface.

Every service process carries ``MAMMO_STACK_ID=<state dir>`` in its environment. ``down``
stops the members of each recorded session, their descendants (flow runs start their own
sessions) and any stray process still carrying that mark. It never runs ``ray stop``, which
stops every Ray process of the machine.

The modules, one noun each: ``config`` (state directory, ports, client variables),
``processes`` (pid files, sessions, the mark, stopping), ``probes`` (is a service answering),
``services`` (how each one starts), ``state`` (the state directory's folders, token and env.sh)
and ``commands`` (``up``, ``down``, ``status``).

This is developer infrastructure, not a pipeline step: no flow imports it; ``flows/cli.py``
does, lazily, for ``mammo up`` / ``mammo down`` / ``mammo status``.
"""

from infra.stack.commands import StackInfo, down, status, up
from infra.stack.config import SERVICES, STACK_MARK, StackConfig
from infra.stack.services import StackError

__all__ = [
    "SERVICES",
    "STACK_MARK",
    "StackConfig",
    "StackError",
    "StackInfo",
    "down",
    "status",
    "up",
]
