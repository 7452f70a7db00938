"""The INT8 splits keep the right backbone convolutions in float: the feature taps the flows read."""

from __future__ import annotations


def test_last_taps_keep_only_each_tap_producer_of_the_full_residual_chain(trained_run):
    from calibration.export import float_op_names, to_openvino
    from calibration.quantize import SPLITS, feature_tap_convs, ignored_names
    from training.checkpoint import load_model

    loaded = load_model(trained_run / "checkpoint.pt")
    model = (loaded[0] if isinstance(loaded, tuple) else loaded).eval()
    graph = to_openvino(model)
    floats = float_op_names(graph, model.float_scopes)
    chain = set(feature_tap_convs(graph, floats, through_add=True))
    last = set(feature_tap_convs(graph, floats, through_add=False))
    assert last and last < chain  # EfficientNet-Lite's tapped stages end in residual blocks
    ops = {op.get_friendly_name(): op for op in graph.get_ordered_ops()}
    for name in last:  # each kept conv feeds the float region without meeting a residual sum
        assert ops[name].get_type_name() == "Convolution"
    assert SPLITS.index("backbone+subnets, last taps in float") < SPLITS.index("backbone+subnets, taps in float")
    ignored_last, _ = ignored_names(graph, model.float_scopes, "backbone+subnets, last taps in float")
    ignored_chain, _ = ignored_names(graph, model.float_scopes, "backbone+subnets, taps in float")
    assert last <= set(ignored_last) and not (chain - last) & set(ignored_last)
    assert chain <= set(ignored_chain)


def test_int8_calibration_images_are_spread_over_the_whole_training_set_not_its_first_names():
    from calibration.quantize import spread

    names = [f"exp{s}_{i:03d}" for s in range(1, 7) for i in range(100)]  # six sessions, in name order
    picked = spread(names, 300)
    assert len(picked) == 300 and picked[0] == names[0] and picked[-1] == names[-1]
    assert {p[:4] for p in picked} == {f"exp{s}" for s in range(1, 7)}  # every session, not the first three
    assert all(40 <= sum(p.startswith(f"exp{s}") for p in picked) <= 60 for s in range(1, 7))
    assert spread(names[:7], 300) == names[:7]


def test_subnet_convolutions_keep_their_names_through_int8_so_their_speed_can_be_compared(trained_run, synthetic_data):
    from calibration import quantize as q
    from calibration.export import to_openvino
    from training.checkpoint import load_model
    from training.data import load_folder, load_image

    loaded = load_model(trained_run / "checkpoint.pt")
    model = (loaded[0] if isinstance(loaded, tuple) else loaded).eval()
    frames = [load_image(s, model.config.input_size) for s in load_folder(synthetic_data).train[:8]]
    graph = to_openvino(model)
    subnets = q.subnet_convs(graph, model.float_scopes)
    ignored, n_subnet = q.ignored_names(graph, model.float_scopes, "backbone+subnets")
    assert n_subnet == len(subnets) > 0 and not subnets & set(ignored)
    float_ms = q.conv_times_ms(graph, frames[0], runs=3)
    int8_ms = q.conv_times_ms(q.quantize(to_openvino(model), frames, ignored), frames[0], runs=3)
    # every subnet convolution is timed in both graphs under its module-path name: none is silently skipped
    assert subnets <= set(float_ms) and subnets <= set(int8_ms)
    assert all(v > 0 for v in float_ms.values())
    slow = q.slower_in_int8(float_ms, int8_ms, subnets)
    assert set(slow) == {n for n in subnets if int8_ms[n] > float_ms[n]}


def test_only_layers_measured_slower_in_int8_are_kept_float():
    from calibration.quantize import slower_in_int8

    float_ms = {"a": 0.34, "b": 0.30, "c": 0.20}
    int8_ms = {"a": 0.76, "b": 0.15, "d": 9.0}  # c not timed in INT8 (fused away), d not a candidate
    assert slower_in_int8(float_ms, int8_ms, {"a", "b", "c"}) == ["a"]


def test_layers_slower_in_int8_stay_float_only_when_the_whole_graph_then_runs_faster(trained_run, synthetic_data, tmp_path,
                                                                                     monkeypatch):
    """Per-layer counters set a float layer in the float graph against its INT8 twin; kept float inside the INT8
    graph it runs in that graph's layouts. edge-calibrate times both INT8 graphs side by side and keeps the faster."""
    from calibration import quantize as q
    from calibration.calibrate import CalibrationConfig, calibrate

    flagged: list[list[str]] = []

    def flag_two(float_times, int8_times, names):  # as if this CPU had run two subnet convolutions slower in INT8
        flagged.append(sorted(names)[:2])
        return flagged[-1]

    monkeypatch.setattr(q, "slower_in_int8", flag_two)
    out = tmp_path / "t.xml"
    report = calibrate(CalibrationConfig(str(trained_run), str(synthetic_data), str(out), precision="int8",
                                         calibration_images=40, progress=False))
    checks = report["quantization"]["float_for_speed_checks"]
    first = report["quantization"]["candidates"][0]
    assert flagged and len(flagged[0]) == 2
    assert checks[0]["split"] == first["split"] and checks[0]["layers"] == 2
    assert checks[0]["ms_all_in_int8"] > 0 and checks[0]["ms_those_float"] > 0
    assert checks[0]["kept_float"] == (checks[0]["ms_those_float"] < checks[0]["ms_all_in_int8"])
    assert first["subnet_convs_float_for_speed"] == (2 if checks[0]["kept_float"] else 0)
    html = out.with_suffix(".report.html").read_text()
    assert "ms all in INT8" in html and ("kept float" in html or "left in INT8" in html)
