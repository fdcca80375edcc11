"""The embedded arithmetic world (work in progress): the canonical problem family, the synthetic
corpus and the cold-start data generators (docs/toy-world.md). Never imported by the RL code path."""
