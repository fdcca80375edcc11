"""Entry points the integration tests start in other processes, each run as a module with the repository
root as the working directory: ``python -m tests.integration.workers.<name> ...`` or
``torchrun --nproc_per_node 2 -m tests.integration.workers.<name> ...``."""
