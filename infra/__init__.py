"""Deployment and developer infrastructure. The Python part is :mod:`infra.stack`, the local
stack behind ``mammo up``; the rest of this folder (Dockerfile, kuberay/, prefect/) is
described in infra/README.md."""
