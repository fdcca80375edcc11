"""``python -m pasodoble.topology CONFIG [--gpus 8] [--gpu-memory-gib 80] [key=value ...]``: the same as
``pasodoble plan`` (the recipe headers cite this form)."""

from pasodoble.commands.plan import main

if __name__ == "__main__":
    raise SystemExit(main())
