"""Official checkpoint layout: key names/shapes/order, round trip, conventions, errors, and the
forward pass against an independent functional re-implementation of the official arithmetic."""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from arkpose.compat.official import (
    OfficialCheckpointError,
    load_official,
    official_config,
    to_official,
)
from arkpose.config import ModelConfig
from arkpose.model import build_model
from arkpose.runtime import configure_threads

configure_threads()


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights of sensible scale, random BN statistics, T convs near the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied weights appear once; BNs below
            if p.dim() == 4:
                fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                scale = 0.3 if ".tconv" in name else 1.0
                p.copy_(scale * torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if name.endswith(("tconv1", "tconv2")):
                m.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]) + 0.3 * torch.randn(4, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def w32():
    torch.manual_seed(0)
    cfg, k = official_config("w32")
    return randomize(build_model(cfg, k))


@pytest.fixture(scope="module")
def w32_official(w32):
    return to_official(w32)


def test_w32_layout_matches_the_official_listing(w32_official):
    sd = w32_official
    keys = list(sd)
    assert len(keys) == 1914
    bn_prefixes = {k.rsplit(".", 1)[0] for k in keys if k.endswith("running_var")}
    assert len(bn_prefixes) == 315
    conv_weights = [k for k in keys if k.endswith(".weight") and sd[k].dim() == 4]
    conv_biases = [k for k in keys if k.endswith(".bias") and k.rsplit(".", 1)[0] not in bn_prefixes]
    buffers = [k for k in keys if k.endswith("regular_matrix")]
    assert (len(conv_weights), len(conv_biases), len(buffers)) == (325, 10, 4)
    assert len(keys) == 325 + 315 * 5 + 10 + 4
    counted = sum(v.numel() for k, v in sd.items() if k.endswith((".weight", ".bias")))
    assert counted == 30_719_988  # with the tied copies counted again
    assert keys[:7] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                        "bn1.num_batches_tracked", "conv2.weight"]
    assert keys[-4:] == ["final_layers.0.weight", "final_layers.0.bias", "final_layers.1.weight", "final_layers.1.bias"]
    block = [k for k in keys if k.startswith("multi_level_layers_4x_heatmap.1.0.")]
    assert [k.split(".")[3] for k in block[:4]] == ["regular_matrix", "transform_matrix_conv1", "transform_matrix_conv1", "stn_conv1"]
    groups = ["stage4", "transition_cls", "transition_reg", "multi_level_layers_4x_heatmap.0",
              "multi_level_layers_4x_heatmap.2", "multi_level_layers_4x_regression", "final_layers"]
    firsts = [next(i for i, k in enumerate(keys) if k.startswith(g)) for g in groups]
    assert firsts == sorted(firsts)
    shapes = {
        "layer1.0.conv1.weight": (64, 64, 1, 1), "layer1.1.conv1.weight": (64, 256, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1), "transition1.1.0.0.weight": (64, 256, 3, 3),
        "transition3.3.0.0.weight": (256, 128, 3, 3), "stage4.2.fuse_layers.3.0.2.0.weight": (256, 32, 3, 3),
        "stage4.2.fuse_layers.3.0.1.0.weight": (32, 32, 3, 3), "stage3.3.fuse_layers.0.2.0.weight": (32, 128, 1, 1),
        "transition_cls.0.weight": (32, 480, 1, 1), "transition_reg.0.weight": (256, 497, 1, 1),
        "multi_level_layers_4x_heatmap.2.0.transform_matrix_conv2.weight": (4, 32, 3, 3),
        "multi_level_layers_4x_regression.0.0.stn_conv1.weight": (256, 256, 3, 3),
        "multi_level_layers_4x_regression.0.0.regular_matrix": (2, 9),
        "final_layers.0.weight": (17, 32, 1, 1), "final_layers.1.weight": (35, 256, 1, 1),
        "bn1.num_batches_tracked": (),
    }
    assert {k: tuple(sd[k].shape) for k in shapes} == shapes
    assert "transition2.0.0.weight" not in sd and "stage2.0.fuse_layers.0.0.weight" not in sd
    for sub in ("transform_matrix_conv1", "stn_conv1", "transform_matrix_conv2", "stn_conv2"):
        copies = [sd[f"multi_level_layers_4x_heatmap.{b}.0.{sub}.weight"] for b in range(3)]
        assert torch.equal(copies[0], copies[1]) and torch.equal(copies[0], copies[2])
    biases = [sd[f"multi_level_layers_4x_heatmap.{b}.0.transform_matrix_conv1.bias"] for b in range(3)]
    assert not torch.equal(biases[0], biases[1])


def test_offset_rows_are_negated_and_center_is_last(w32, w32_official):
    ours = w32.regression_head.classifier
    torch.testing.assert_close(w32_official["final_layers.1.weight"][:34], -ours.weight[:34], rtol=0, atol=0)
    torch.testing.assert_close(w32_official["final_layers.1.bias"][:34], -ours.bias[:34], rtol=0, atol=0)
    assert torch.equal(w32_official["final_layers.1.weight"][34], ours.weight[34].contiguous())


def test_round_trip_gives_identical_weights_and_outputs(w32, w32_official):
    loaded = load_official(w32_official, "w32")
    b0, b1, _ = loaded.heatmap_head.branches
    assert b1.aconv2.weight is b0.aconv2.weight and b1.tconv1.bias is not b0.tconv1.bias
    assert len(list(loaded.parameters())) == len(list(w32.parameters()))
    assert all(p.device.type == "cpu" for p in loaded.state_dict().values())
    again = to_official(loaded)
    assert list(again) == list(w32_official)
    assert all(torch.equal(again[k], w32_official[k]) for k in again)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = w32(x), loaded(x)
    for key in ("heatmaps", "center", "offsets"):
        assert torch.equal(a[key], b[key]), key


def test_ddp_prefix_and_training_checkpoint_layouts(w32_official, tmp_path):
    ddp = {"module." + k: v for k, v in w32_official.items()}
    ckpt = {"epoch": 3, "model": "pose_hrnet", "perf": 0.5, "optimizer": {}, "state_dict": ddp,
            "best_state_dict": dict(w32_official)}
    path = tmp_path / "checkpoint.pth.tar"
    torch.save(ckpt, path)
    for source in (ddp, ckpt, path):
        model = load_official(source, "w32")
        assert torch.equal(model.heatmap_head.classifier.bias, w32_official["final_layers.0.bias"])
    best = load_official(ckpt, "w32", entry="best_state_dict")
    assert torch.equal(best.backbone.conv1.weight, w32_official["conv1.weight"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_official(tmp_path / "missing.pth", "w32")


def test_mismatches_are_listed(w32_official):
    broken = dict(w32_official)
    del broken["stage3.1.branches.2.0.conv1.weight"]
    broken["stage9.extra.weight"] = torch.zeros(1)
    with pytest.raises(OfficialCheckpointError) as err:
        load_official(broken, "w32")
    text = str(err.value)
    assert "1 missing keys" in text and "stage3.1.branches.2.0.conv1.weight" in text
    assert "1 unexpected keys" in text and "stage9.extra.weight" in text
    with torch.device("meta"):  # shapes only
        w48 = build_model(*official_config("w48"))
        crowd = build_model(*official_config("crowdpose-w32"))
    with pytest.raises(OfficialCheckpointError, match="shape mismatches") as err:
        load_official(to_official(w48), "w32")
    assert "transition1.0.0.weight: checkpoint (48, 256, 3, 3) vs expected (32, 256, 3, 3)" in str(err.value)
    assert "looks like variant 'w48'" in str(err.value)
    with pytest.raises(OfficialCheckpointError, match="looks like variant 'crowdpose-w32'"):
        load_official(to_official(crowd), "w32")
    with pytest.raises(ValueError, match="unknown official variant"):
        load_official(w32_official, "w64")


def test_tied_copies_that_differ_warn_and_the_last_wins(w32_official):
    sd = dict(w32_official)
    last = sd["multi_level_layers_4x_heatmap.2.0.stn_conv1.weight"] + 1.0
    sd["multi_level_layers_4x_heatmap.2.0.stn_conv1.weight"] = last
    with pytest.warns(UserWarning, match="differ between the heatmap branches"):
        model = load_official(sd, "w32")
    assert torch.equal(model.heatmap_head.branches[0].aconv1.weight, last)
    sd["multi_level_layers_4x_regression.0.0.regular_matrix"] = torch.zeros(2, 9)
    with pytest.raises(OfficialCheckpointError, match="regular 3x3 grid"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_official(sd, "w32")


def test_non_official_shapes_cannot_be_exported():
    with torch.device("meta"):
        model = build_model(dataclasses.replace(ModelConfig(), backbone="nano-w16", adaptive=False), 3)
    with pytest.raises(ValueError, match="official layout"):
        to_official(model)


# ---------------------------------------------------------------------------------------
# An independent functional forward written from official_state_dict.md / docs/method.md §1,
# reading only official keys; deformable conv by grid_sample on 18-channel offsets.


def _conv(sd, x, name, stride=1, dilation=1):
    w = sd[name + ".weight"]
    return F.conv2d(x, w, sd.get(name + ".bias"), stride, dilation * (w.shape[-1] // 2), dilation)


def _bn(sd, x, name):
    return F.batch_norm(x, sd[name + ".running_mean"], sd[name + ".running_var"], sd[name + ".weight"],
                        sd[name + ".bias"], False, 0.1, 1e-5)


def _deform_conv(x, offsets, weight, d):
    """DCNv1: tap (ky, kx) of pixel (h, w) samples (h − d + ky·d + off_y, w − d + kx·d + off_x)."""
    hh, ww = x.shape[-2:]
    ys = torch.arange(hh, dtype=x.dtype)[:, None]
    xs = torch.arange(ww, dtype=x.dtype)[None, :]
    out = 0
    for k in range(9):
        ky, kx = divmod(k, 3)
        py = ys - d + ky * d + offsets[:, 2 * k]
        px = xs - d + kx * d + offsets[:, 2 * k + 1]
        grid = torch.stack([2 * px / (ww - 1) - 1, 2 * py / (hh - 1) - 1], -1)
        sample = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        out = out + torch.einsum("oc,nchw->nohw", weight[:, :, ky, kx], sample)
    return out


def _stn_block(sd, x, p, d):
    def offsets(t):
        n, _, h, w = t.shape
        tm = t.permute(0, 2, 3, 1).reshape(n * h * w, 2, 2)
        g = sd[p + ".regular_matrix"].to(t.dtype)
        return (torch.matmul(tm, g) - g).transpose(1, 2).reshape(n, h, w, 18).permute(0, 3, 1, 2)

    off1 = offsets(_conv(sd, x, p + ".transform_matrix_conv1"))
    off2 = offsets(_conv(sd, x, p + ".transform_matrix_conv2"))
    out = F.relu(_bn(sd, _deform_conv(x, off1, sd[p + ".stn_conv1.weight"], d), p + ".bn1"))
    out = _bn(sd, _deform_conv(out, off2, sd[p + ".stn_conv2.weight"], d), p + ".bn2")
    return F.relu(out + x)


def official_reference(sd, x):
    """-> (heatmaps (N, K+1) center last, offsets (N, 2K) as position − keypoint)."""
    x = F.relu(_bn(sd, _conv(sd, x, "conv1", 2), "bn1"))
    x = F.relu(_bn(sd, _conv(sd, x, "conv2", 2), "bn2"))
    i = 0
    while f"layer1.{i}.conv1.weight" in sd:
        p = f"layer1.{i}"
        out = F.relu(_bn(sd, _conv(sd, x, p + ".conv1"), p + ".bn1"))
        out = F.relu(_bn(sd, _conv(sd, out, p + ".conv2"), p + ".bn2"))
        out = _bn(sd, _conv(sd, out, p + ".conv3"), p + ".bn3")
        res = _bn(sd, _conv(sd, x, p + ".downsample.0"), p + ".downsample.1") if p + ".downsample.0.weight" in sd else x
        x = F.relu(out + res)
        i += 1
    xs = [x]
    for s in (2, 3, 4):
        t = f"transition{s - 1}"
        new = []
        for b in range(s):
            if f"{t}.{b}.0.weight" in sd:
                new.append(F.relu(_bn(sd, _conv(sd, xs[b], f"{t}.{b}.0"), f"{t}.{b}.1")))
            elif f"{t}.{b}.0.0.weight" in sd:
                y, k = xs[-1], 0
                while f"{t}.{b}.{k}.0.weight" in sd:
                    y = F.relu(_bn(sd, _conv(sd, y, f"{t}.{b}.{k}.0", 2), f"{t}.{b}.{k}.1"))
                    k += 1
                new.append(y)
            else:
                new.append(xs[b])
        xs = new
        m = 0
        while f"stage{s}.{m}.branches.0.0.conv1.weight" in sd:
            p = f"stage{s}.{m}"
            for b in range(s):
                k = 0
                while f"{p}.branches.{b}.{k}.conv1.weight" in sd:
                    q = f"{p}.branches.{b}.{k}"
                    out = F.relu(_bn(sd, _conv(sd, xs[b], q + ".conv1"), q + ".bn1"))
                    xs[b] = F.relu(_bn(sd, _conv(sd, out, q + ".conv2"), q + ".bn2") + xs[b])
                    k += 1
            fused = []
            for i in range(s):
                y = None
                for j in range(s):
                    f = f"{p}.fuse_layers.{i}.{j}"
                    if j == i:
                        z = xs[j]
                    elif j > i:
                        z = F.interpolate(_bn(sd, _conv(sd, xs[j], f + ".0"), f + ".1"), scale_factor=2 ** (j - i), mode="nearest")
                    else:
                        z = xs[j]
                        for k in range(i - j):
                            z = _bn(sd, _conv(sd, z, f"{f}.{k}.0", 2), f"{f}.{k}.1")
                            z = F.relu(z) if k < i - j - 1 else z
                    y = z if y is None else y + z
                fused.append(F.relu(y))
            xs = fused
            m += 1
    size = xs[0].shape[-2:]
    feat = torch.cat([xs[0]] + [F.interpolate(v, size=size, mode="bilinear", align_corners=False) for v in xs[1:]], 1)
    heat = []
    for j in range(3):
        xc = F.relu(_bn(sd, _conv(sd, feat, "transition_cls.0"), "transition_cls.1"))
        heat.append(_conv(sd, _stn_block(sd, xc, f"multi_level_layers_4x_heatmap.{j}.0", j + 1), "final_layers.0"))
    mean_heat = torch.mean(torch.stack(heat), 0)
    xr = F.relu(_bn(sd, _conv(sd, torch.cat([feat, mean_heat], 1), "transition_reg.0"), "transition_reg.1"))
    reg = _conv(sd, _stn_block(sd, xr, "multi_level_layers_4x_regression.0.0", 1), "final_layers.1")
    heatmaps = torch.mean(torch.stack([torch.cat([h, reg[:, -1:]], 1) for h in heat]), 0)
    return heatmaps, reg[:, :-1]


def _compare_with_reference(model, x, rel):
    """Outputs equal the reference's up to ``rel`` x the largest reference value."""
    sd = to_official(model)
    with torch.no_grad():
        ref_heat, ref_off = official_reference(sd, x)
        out = model(x)
    k = out["heatmaps"].shape[1]
    atol = rel * max(ref_heat.abs().max().item(), ref_off.abs().max().item())
    torch.testing.assert_close(out["heatmaps"], ref_heat[:, :k], rtol=0, atol=atol)
    torch.testing.assert_close(out["center"], ref_heat[:, k:], rtol=0, atol=atol)
    torch.testing.assert_close(out["offsets"], -ref_off, rtol=0, atol=atol)
    assert ref_off.abs().max() > 0.1 and ref_heat.abs().max() > 0.1  # not a trivial match


def test_forward_matches_the_official_arithmetic_small_model():
    torch.manual_seed(0)
    cfg = dataclasses.replace(
        ModelConfig(), backbone="nano-w16", heatmap_channels=8, regression_channels=16,
        backbone_modules=(1, 2, 1), backbone_blocks=(2, 1, 1),
    )
    model = randomize(build_model(cfg, 4), seed=3).double()
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _compare_with_reference(model, x, rel=1e-12)  # float64: the same arithmetic, not just close


def test_forward_matches_the_official_arithmetic_w32(w32):
    # Random weights give outputs in the thousands; float32 rounding is ~1e-6 of that.
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    _compare_with_reference(w32, x, rel=1e-5)
