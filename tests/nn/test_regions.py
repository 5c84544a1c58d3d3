"""Region boxes and crops as tensor ops: the same boxes as the per-image reference of the FRL
benchmark, exact crops at native resolution, and one ONNX graph that ONNX Runtime runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facedistill.attributes import ATTRIBUTES
from facedistill.nn.regions import BOX_SIDE, GROUPS, MAP_RULES, RegionBoxes, crop_regions


def _reference_box(heat: np.ndarray, side: float, prior: tuple[float, float]
                   ) -> tuple[float, float, float, bool]:
    """The rule written out for one [0, 1] map: flat -> prior; else the weighted centroid of
    the cells at or above half the maximum."""
    h, w = heat.shape
    if heat.max() - heat.mean() < 0.15:
        return prior[0], prior[1], side, True
    ys, xs = np.nonzero(heat >= 0.5 * heat.max())
    wts = heat[ys, xs]
    return (float(((xs + 0.5) / w * wts).sum() / wts.sum()),
            float(((ys + 0.5) / h * wts).sum() / wts.sum()), side, False)


@pytest.mark.parametrize("rule", MAP_RULES)
def test_batched_boxes_follow_the_rule_per_image(rule: str) -> None:
    rng = np.random.default_rng(0)
    cams = rng.normal(size=(6, 40, 8, 8)).astype(np.float32)
    cams[3] = 0.0  # every map flat: the priors stand in
    logits = rng.normal(size=(6, 40)).astype(np.float32)
    priors = {g: (0.3, 0.6) for g in GROUPS}
    boxes, flat, heat = RegionBoxes(GROUPS, ATTRIBUTES, BOX_SIDE, priors, rule=rule)(
        torch.from_numpy(cams), torch.from_numpy(logits))
    assert boxes.shape == (6, len(GROUPS), 3) and heat.shape == (6, len(GROUPS), 8, 8)
    assert flat[3].all() and torch.allclose(boxes[3, :, :2], torch.tensor([0.3, 0.6]))
    for i in range(6):
        for j, g in enumerate(GROUPS):
            want = _reference_box(heat[i, j].numpy(), BOX_SIDE[g], priors[g])
            assert boxes[i, j].tolist() == pytest.approx(want[:3], abs=1e-6)
            assert bool(flat[i, j]) == want[3]
    assert float(heat.min()) >= 0 and float(heat.max()) <= 1 + 1e-6


def test_crops_are_exact_at_native_resolution_and_black_outside() -> None:
    img = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16)
    boxes = torch.tensor([[[0.5, 0.5, 1.0], [0.25, 0.25, 0.5]]] * 2)
    out = crop_regions(img, boxes, 16)
    assert out.shape == (2, 2, 3, 16, 16)
    torch.testing.assert_close(out[:, 0], img)
    torch.testing.assert_close(crop_regions(img, boxes[:, 1:], 8)[:, 0], img[:, :, :8, :8])
    corner = crop_regions(img + 1, torch.tensor([[[0.0, 0.0, 0.5]]] * 2), 8)
    assert (corner[..., :4, :4] == 0).all() and (corner[..., 4:, 4:] > 0).all()
    # differentiable in the image: the part subnets' loss reaches whatever made the image
    x = img.clone().requires_grad_(True)
    crop_regions(x, boxes, 8).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_crops_are_grid_samples_bilinear_sampling() -> None:
    """The separable crop is ``grid_sample`` (bilinear, align_corners=False, zero padding) on
    the box's grid, boxes off the image's edge included."""
    gen = torch.Generator().manual_seed(0)
    img = torch.randn(3, 3, 40, 56, generator=gen)
    boxes = torch.rand(3, 5, 3, generator=gen) * torch.tensor([1.2, 1.2, 0.9]) - torch.tensor(
        [0.1, 0.1, -0.1])  # centres a little past the edges, sides 0.1-1.0
    size = 12
    steps = (torch.arange(size) + 0.5) / size - 0.5
    gx = boxes[..., 0, None] + boxes[..., 2, None] * steps
    gy = boxes[..., 1, None] + boxes[..., 2, None] * steps
    grid = torch.stack([gx[..., None, :].expand(3, 5, size, size),
                        gy[..., :, None].expand(3, 5, size, size)], dim=-1) * 2 - 1
    want = torch.nn.functional.grid_sample(
        img[:, None].expand(3, 5, 3, 40, 56).reshape(15, 3, 40, 56),
        grid.reshape(15, size, size, 2), mode="bilinear", padding_mode="zeros",
        align_corners=False).reshape(3, 5, 3, size, size)
    torch.testing.assert_close(crop_regions(img, boxes, size), want, atol=1e-5, rtol=0)


class _BoxesAndCrops(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.boxes = RegionBoxes(GROUPS, ATTRIBUTES, BOX_SIDE, rule="signed")

    def forward(self, images: torch.Tensor, cams: torch.Tensor, logits: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        boxes, _, _ = self.boxes(cams, logits)
        return boxes, crop_regions(images, boxes, 12)


def test_boxes_and_crops_export_to_one_onnx_graph(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    torch.manual_seed(0)
    images, cams, logits = torch.rand(2, 3, 32, 32), torch.randn(2, 40, 8, 8), torch.randn(2, 40)
    model = _BoxesAndCrops().eval()
    path = tmp_path / "regions.onnx"
    torch.onnx.export(model, (images, cams, logits), str(path), dynamo=True,
                      external_data=False, opset_version=18,
                      input_names=["images", "cams", "logits"], output_names=["boxes", "crops"])
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    # the crops are two MatMuls (no GridSample), and no data-dependent flow
    assert "MatMul" in ops and not ops & {"GridSample", "Loop", "If", "NonZero"}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": images.numpy(), "cams": cams.numpy(),
                          "logits": logits.numpy()})
    want = model(images, cams, logits)
    np.testing.assert_allclose(got[0], want[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(got[1], want[1].numpy(), atol=1e-4)
