"""The random streams of one audit, all derived from ``--seed`` and independent of each other.

``np.random.SeedSequence(seed).spawn`` gives independent child streams; an audit uses fixed slots:

- child 0: the synthetic data (``data/loading.py``);
- child 1: the gradient check's directions (``sanity.py``);
- child 2, and its child i: sample i's estimator (``fisher/``);
- child 3, and its child i: sample i's attacks (``attacks/``: PGD's random starts);
- child 4, and its child k: the attack correlation's bootstrap (k = 0 overall, k = c + 1 class c).

Sample i's stream is ``SeedSequence(seed).spawn(3)[2].spawn(i + 1)[i]``, built directly from its
spawn key (2, i): it depends on the seed and i only, not on how many samples are audited or on
how many draws the samples before it used, so auditing samples 0..4 and auditing sample 3 alone
give sample 3 the same randomised result. No stream shares draws with another (the data and the
first sample's estimator once drew the same numbers from ``default_rng(seed)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Spawn-key slots of the seed's children.
DATA_SLOT, GRADIENT_CHECK_SLOT, SAMPLES_SLOT = 0, 1, 2
ATTACK_SLOT, BOOTSTRAP_SLOT = 3, 4


@dataclass(frozen=True)
class RandomStreams:
    """Generators for the parts of one audit seeded by ``seed`` (a non-negative integer)."""

    seed: int

    def _child(self, *key: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=key))

    def data(self) -> np.random.Generator:
        """Synthetic inputs."""
        return self._child(DATA_SLOT)

    def gradient_check(self) -> np.random.Generator:
        """The gradient check's random directions and adjoint pairs."""
        return self._child(GRADIENT_CHECK_SLOT)

    def sample(self, index: int) -> np.random.Generator:
        """The estimator of sample ``index`` (its position in the audited data)."""
        return self._child(SAMPLES_SLOT, int(index))

    def attack(self, index: int) -> np.random.Generator:
        """The attacks on sample ``index`` (PGD's random starts); independent of its estimator's stream."""
        return self._child(ATTACK_SLOT, int(index))

    def attack_bootstrap(self, group: int = 0) -> np.random.Generator:
        """The bootstrap of the attack correlation: ``group`` 0 over all samples, c + 1 for class c."""
        return self._child(BOOTSTRAP_SLOT, int(group))
