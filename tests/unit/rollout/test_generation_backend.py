"""The generation-backend lifecycle (rollout/base.py) and the role-swapping generator (rollout/slot.py)."""

import pytest

from pasodoble.dual_play import Role
from pasodoble.rollout.base import GenerationBackend
from pasodoble.rollout.slot import RoleSlot


class Echo(GenerationBackend):
    def generate(self, prompts, params):
        return [[] for _ in prompts]

    def sync_weights(self, model):
        pass


def test_the_lifecycle_has_defaults_beyond_generate_and_sync_weights():
    backend = Echo()
    assert backend.pop_sync_seconds() == 0.0
    assert backend.local() is backend
    backend.hold()
    backend.close()
    backend._sync_seconds += 1.5  # a lazy load
    assert backend.pop_sync_seconds() == 1.5 and backend.pop_sync_seconds() == 0.0
    with pytest.raises(TypeError):  # generate and sync_weights are the backend's to write
        GenerationBackend()


def test_a_role_refuses_a_generator_that_is_not_a_generation_backend():
    class DuckTyped:
        def generate(self, prompts, params):
            return []

        def sync_weights(self, model):
            pass

    with pytest.raises(TypeError, match="derive it from that class"):
        Role("solver", None, DuckTyped(), 1.0, 8)
    assert Role("solver", None, Echo(), 1.0, 8).backend is not None


class Recording(RoleSlot):
    def __init__(self):
        super().__init__()
        self.loaded = []

    def _load(self, role, model):
        self.loaded.append((role, model))


def test_a_slot_loads_at_a_role_switch_and_after_an_update_only():
    slot = Recording()
    assert slot.ensure("proposer", "p0") >= 0 and slot.holds == "proposer"
    assert slot.ensure("proposer", "p0") == 0.0  # held: nothing to load
    slot.invalidate("solver")  # another role's update: the proposer's weights are still current
    slot.ensure("proposer", "p0")
    slot.ensure("solver", "s0")  # a switch
    slot.invalidate("solver")  # the solver's update
    assert slot.holds is None
    slot.ensure("solver", "s1")
    slot.forget()  # the generator dropped its weights
    slot.ensure("solver", "s1")
    assert slot.loaded == [("proposer", "p0"), ("solver", "s0"), ("solver", "s1"), ("solver", "s1")]
    assert slot.loads == 4
