"""Shared fixtures: real ldm U-Nets (random, seeded weights) and a real k-diffusion pipeline."""
from __future__ import annotations

import pytest
import torch

from deepcache.testbed import Pipeline, build_unet, make_torchvision_importable

torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_configure(config: pytest.Config) -> None:
    """Once per session, before any test file is imported, so that every file passes when run alone."""
    make_torchvision_importable()


@pytest.fixture(scope="session")
def tiny_unet():
    return build_unet("tiny")


@pytest.fixture(scope="session")
def pipe(tiny_unet):
    return Pipeline(tiny_unet)
