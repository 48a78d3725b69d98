import pytest

from arkpose import config, presets, spec


def test_builtin_specs():
    assert spec.COCO.num_keypoints == 17 and spec.COCO.num_features == 74
    assert spec.CROWDPOSE.num_keypoints == 14 and spec.CROWDPOSE.num_features == 59
    for s in (spec.COCO, spec.CROWDPOSE):
        flip = s.flip_index
        assert [flip[flip[i]] for i in range(s.num_keypoints)] == list(range(s.num_keypoints))
        assert s.keypoints[flip[s.index("right_hip")]] == "left_hip"
        assert s.keypoints[flip[s.index("left_wrist")]] == "right_wrist"
    assert spec.get_spec("COCO") is spec.COCO
    with pytest.raises(KeyError, match="crowdpose"):
        spec.get_spec("mpii")


def _coco_like(**changes):
    fields = {
        "name": "x", "keypoints": ("a", "b", "c"), "flip_index": (0, 2, 1), "limbs": ((0, 1),),
        "skeleton": ((0, 1),), "sigmas": (0.1, 0.1, 0.1), "torso": ((1, 2),),
    }
    fields.update(changes)
    return spec.KeypointSpec(**fields)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"flip_index": (1, 2, 0)}, "involution"),
        ({"flip_index": (0, 0, 1)}, "permutation"),
        ({"limbs": ((0, 3),)}, "out of range"),
        ({"sigmas": (0.1, 0.1)}, "2 sigmas for 3 keypoints"),
        ({"torso": ()}, "torso"),
    ],
)
def test_spec_validation(changes, message):
    _coco_like()  # the unchanged spec is valid
    with pytest.raises(spec.SpecError, match=message):
        _coco_like(**changes)


def test_coco_category_skeleton_is_one_based():
    cat = spec.COCO.coco_category()
    assert [16, 14] in cat["skeleton"] and len(cat["skeleton"]) == 19
    assert cat["keypoints"][0] == "nose"


def test_overrides_reach_every_section():
    cfg = presets.preset("quick")
    config.apply_overrides(
        cfg, ["model.adaptive=false", "loss.tradeoff=off", "eval.decode.scales=0.5,1,2", "seed=7"]
    )
    assert cfg.model.adaptive is False and cfg.loss.background_weight == 1.0
    assert cfg.eval.decode.scales == (0.5, 1.0, 2.0) and cfg.seed == 7
    config.apply_overrides(cfg, {"loss.tradeoff": True, "optim.lr": "3e-4"})
    assert cfg.loss.background_weight == pytest.approx(0.1) and cfg.optim.lr == 3e-4


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.adaptiv=false", "(?s)unknown config key 'model.adaptiv'.*model.adaptive"),
        ("model=1", "unknown config key 'model'"),
        ("optim.epochs=ten", "optim.epochs: cannot read 'ten'"),
        ("model.guidance=maybe", "not a boolean"),
        ("no_equals_sign", "must look like section.field=value"),
    ],
)
def test_override_errors(override, message):
    with pytest.raises(config.ConfigError, match=message):
        config.apply_overrides(presets.preset("smoke"), [override])


def test_unknown_preset_lists_presets():
    with pytest.raises(config.ConfigError, match="coco-w32"):
        presets.preset("fast")


def test_yaml_round_trip(tmp_path):
    cfg = config.apply_overrides(presets.preset("coco-w48"), ["eval.decode.flip=false"])
    config.save_yaml(cfg, tmp_path / "c.yaml")
    assert config.load_yaml(tmp_path / "c.yaml") == cfg
    (tmp_path / "bad.yaml").write_text("model:\n  widths: 3\n")
    with pytest.raises(config.ConfigError, match="model.widths"):
        config.load_yaml(tmp_path / "bad.yaml")


def test_every_preset_builds_and_paper_schedule():
    for name in presets.PRESETS:
        assert presets.preset(name).name == name
    coco = presets.preset("coco-w32")
    assert coco.optim.batch_size == 12 and coco.optim.epochs == 140
    assert [round(f * 140) for f in coco.optim.lr_drops] == [90, 120]


def test_dataset_picks_its_keypoint_spec():
    cfg = presets.preset("coco-w32")
    assert cfg.data.spec is spec.COCO
    assert presets.preset("crowdpose-w32").data.spec is spec.CROWDPOSE
    cfg.data.dataset = "mpii"
    with pytest.raises(config.ConfigError, match="unknown data.dataset 'mpii'.*crowdpose"):
        _ = cfg.data.spec


def test_oks_sigma_scale_scales_only_the_sigmas():
    cfg = presets.preset("quick")  # SynthPose: COCO's 17 keypoints, tolerance x3 on CPU
    got = cfg.data.spec
    assert cfg.data.oks_sigma_scale == 3.0 and got.name == "coco"
    assert got.sigmas == pytest.approx([3 * s for s in spec.COCO.sigmas])
    assert (got.keypoints, got.flip_index, got.limbs) == (
        spec.COCO.keypoints, spec.COCO.flip_index, spec.COCO.limbs)
    for bad in (0.0, -1.0):
        cfg.data.oks_sigma_scale = bad
        with pytest.raises(config.ConfigError, match="oks_sigma_scale must be > 0"):
            _ = cfg.data.spec


def test_configs_stored_before_decode_config_still_load():
    old = config.to_dict(config.Config())
    old["eval"].pop("decode")
    old["eval"].update(flip=False, scales=[0.5, 1.0], max_people=12, center_threshold=0.2)
    old["data"]["output_stride"] = 4
    cfg = config.from_dict(old)
    assert cfg.eval.decode == config.DecodeConfig(
        flip=False, scales=(0.5, 1.0), max_people=12, center_threshold=0.2)
    old["data"]["output_stride"] = 8
    with pytest.raises(config.ConfigError, match="output_stride is no longer a setting"):
        config.from_dict(old)
    with pytest.raises(config.ConfigError, match="did you mean eval.decode.max_people"):
        config.apply_overrides(config.Config(), ["eval.max_people=3"])
    cfg = config.apply_overrides(config.Config(), ["eval.decode.refine_window=9"])
    assert cfg.eval.decode.refine_window == 9 and config.Config().eval.decode.refine_window == 13
