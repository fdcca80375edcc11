"""GPU tests: need a CUDA device, skipped without one."""
