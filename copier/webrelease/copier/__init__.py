"""webrelease's data plane: release a build to customers' sites. Knows nothing of Kubernetes."""
