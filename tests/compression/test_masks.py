import pytest
import torch

from kick_models.compression.masks import keep_mask, nm_mask, prune_count, unstructured_mask


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.29, 0.5, 0.7, 0.9])
def test_row_mask_prunes_exactly_floor_per_row(sparsity):
    score = torch.randn(37, 100).abs()
    keep = unstructured_mask(score, sparsity, "row")
    assert ((~keep).sum(1) == prune_count(sparsity, 100)).all()
    assert prune_count(0.29, 100) == 29  # not 28 from 0.29 * 100 = 28.999...


def test_matrix_and_tile_masks_count_exactly():
    score = torch.randn(33, 300).abs()
    assert (~unstructured_mask(score, 0.5, "matrix")).sum() == 33 * 150
    keep = unstructured_mask(score, 0.5, "tile", tile=128)
    for c in (0, 128, 256):
        tile = keep[:, c : c + 128]
        assert (~tile).sum() == prune_count(0.5, tile.numel())


def test_ties_never_overshoot():
    score = torch.zeros(4, 64)  # every score tied
    assert ((~unstructured_mask(score, 0.5, "row")).sum(1) == 32).all()
    assert (~unstructured_mask(score, 0.3, "matrix")).sum() == prune_count(0.3, 256)
    rounded = torch.randn(64, 64).to(torch.bfloat16).float().round()  # heavy ties, as in bf16
    assert (~unstructured_mask(rounded, 0.37, "matrix")).sum() == prune_count(0.37, 64 * 64)
    assert ((~nm_mask(torch.zeros(8, 16), 2, 4)).reshape(8, 4, 4).sum(-1) == 2).all()


@pytest.mark.parametrize("n,m", [(1, 2), (2, 4), (4, 8), (3, 8)])
def test_nm_keeps_n_of_every_m(n, m):
    score = torch.randn(16, 64)
    keep = nm_mask(score, n, m)
    assert (keep.reshape(16, 64 // m, m).sum(-1) == n).all()
    # the kept ones are the largest of their group
    groups = score.reshape(16, -1, m)
    kept_min = groups.masked_fill(~keep.reshape(16, -1, m), float("inf")).min(-1).values
    dropped_max = groups.masked_fill(keep.reshape(16, -1, m), float("-inf")).max(-1).values
    assert (kept_min >= dropped_max).all()


def test_bad_mask_arguments():
    with pytest.raises(ValueError, match="multiple of M"):
        nm_mask(torch.randn(4, 10), 2, 4)
    with pytest.raises(ValueError, match="0 < N < M"):
        nm_mask(torch.randn(4, 8), 4, 4)
    with pytest.raises(ValueError, match="group="):
        unstructured_mask(torch.randn(4, 8), 0.5, "column")
    with pytest.raises(ValueError, match="sparsity="):
        keep_mask(torch.randn(4, 8), sparsity=1.5)
