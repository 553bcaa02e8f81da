"""The control plane of webrelease: a kopf operator for the ``WebRelease`` resource
(docs/design.md, docs/operator.md).

Pure modules (no I/O, unit-tested without a cluster): :mod:`.constants`, :mod:`.status`,
:mod:`.conditions`, :mod:`.crd`, :mod:`.jobs`, :mod:`.aggregate`, :mod:`.runs`.
Effectful ones: :mod:`.kube` (every Kubernetes API call), :mod:`.reports` (object storage),
:mod:`.handlers` (the kopf glue), :mod:`.main` (the ``webrelease operator`` process).
"""
