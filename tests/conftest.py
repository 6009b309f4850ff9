"""Shared fixtures: real ldm U-Nets (random, seeded weights) and a real k-diffusion pipeline."""
from __future__ import annotations

import pytest
import torch

from deepcache.testbed import Pipeline, build_unet

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_unet():
    return build_unet("tiny")


@pytest.fixture(scope="session")
def pipe(tiny_unet):
    return Pipeline(tiny_unet)
