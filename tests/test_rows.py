"""Telling which rows of the denoiser's batch a U-Net call carries (``deepcache.rows``)."""
import torch

from deepcache.rows import DenoiserBatch


def test_a_slice_of_the_batch_is_known_by_its_rows_and_equal_rows_share_an_identity():
    frames = torch.randn(3, 4, 8, 8)
    batch = DenoiserBatch(torch.cat([frames, frames]))  # cond and uncond rows of three frames
    assert batch.rows_of(torch.cat([frames, frames])[[2, 0, 5, 3]] * 0.3) == (2, 0, 2, 0)
    assert batch.rows_of(torch.cat([frames[[1]], torch.ones(1, 5, 8, 8)], dim=1)) == (1,)  # inpainting channels


def test_whole_batches_tiles_and_foreign_rows_are_not_slices():
    frames = torch.randn(4, 4, 16, 16)
    batch = DenoiserBatch(frames)
    assert batch.rows_of(frames) is None
    assert batch.rows_of(frames[:2, :, :8, :8]) is None  # a tile
    assert batch.rows_of(torch.randn(2, 4, 16, 16)) is None
    assert batch.rows_of(frames[:2] + 0.01 * torch.randn(2, 4, 16, 16)) is None  # rows that moved
