"""EventRPG's augmentations (paper §4): RPGDrop, RPGMix (eq. 15), the policy and its loader."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from data_tools import augment
from data_tools.events import EVENT_DTYPE, make_events, validate
from data_tools.frames import frame_index
from minisnn import models, nn
from minisnn.methods import eventrpg as E

SENSOR = (34, 34, 2)
OPS = augment.NDA_OPS + ("rpg_drop",)          # the policy's 10 ops (§4.4, Fig. 3)


def uniform_events(n, rng, p=None, xy=(0, 34), t_max=10**6):
    pol = rng.integers(0, 2, n) if p is None else np.full(n, p)
    return make_events(rng.integers(*xy, n), rng.integers(*xy, n), np.sort(rng.integers(0, t_max, n)), pol)


def box_map(x0, y0, x1, y1, size=(34, 34)):
    m = np.zeros(size)
    m[y0:y1 + 1, x0:x1 + 1] = 1.0
    return m


def assert_valid(ev, sensor=SENSOR):
    assert ev.dtype == EVENT_DTYPE
    validate(ev, sensor)                      # sorted and inside the sensor


# ---------------------------------------------------------------- RPGDrop (§4.2)
def test_rpg_drop_follows_saliency_left_half():
    rng = np.random.default_rng(0)
    ev = uniform_events(40000, rng)
    out = E.rpg_drop(ev, box_map(0, 0, 16, 33), SENSOR, 0.7, rng)
    left_in, left_out = np.sum(ev["x"] <= 16), np.sum(out["x"] <= 16)
    assert 1 - left_out / left_in == pytest.approx(0.7, abs=0.015)    # ~θ of the salient events go
    assert np.sum(out["x"] > 16) == np.sum(ev["x"] > 16)               # none where S = 0
    assert_valid(out)


def test_rpg_drop_fraction_is_theta_times_mean_saliency():
    rng = np.random.default_rng(1)
    ev = uniform_events(50000, rng)
    s = rng.random((2, 4, 34, 34))
    theta = 0.6
    b = frame_index(ev, 4)
    expected = theta * s[ev["p"], b, ev["y"], ev["x"]]          # per-event drop probability
    dropped = len(ev) - len(E.rpg_drop(ev, s, SENSOR, theta, rng))
    sd = np.sqrt(np.sum(expected * (1 - expected)))
    assert abs(dropped - expected.sum()) < 4 * sd
    assert expected.mean() == pytest.approx(theta * 0.5, abs=0.01)


def test_rpg_drop_uses_polarity_and_time_bin():
    rng = np.random.default_rng(2)
    ev = uniform_events(5000, rng)
    s = np.zeros((2, 2, 34, 34))
    s[1, 1] = 1.0                                               # ON events of the second (by count) half
    out = E.rpg_drop(ev, s, SENSOR, 1.0, rng)
    gone = (ev["p"] == 1) & (frame_index(ev, 2) == 1)
    np.testing.assert_array_equal(out, ev[~gone])


def test_rpg_drop_resizes_a_small_map_to_the_sensor():
    rng = np.random.default_rng(3)
    ev = uniform_events(20000, rng)
    out = E.rpg_drop(ev, box_map(0, 0, 7, 16, (17, 17)), SENSOR, 1.0, rng)   # model saw 17x17
    assert not np.any(out["x"] <= 14)                          # fully salient after bilinear upsampling
    assert np.sum(out["x"] >= 17) == np.sum(ev["x"] >= 17)     # zero there


def test_rpg_drop_keeps_the_stream_when_everything_would_go_and_checks_inputs():
    rng = np.random.default_rng(4)
    ev = uniform_events(300, rng)
    np.testing.assert_array_equal(E.rpg_drop(ev, np.ones((34, 34)), SENSOR, 1.0, rng), ev)
    np.testing.assert_array_equal(E.rpg_drop(ev, np.ones((34, 34)), SENSOR, 0.0, rng), ev)
    for theta in (-0.1, 1.5, np.nan):
        with pytest.raises(ValueError, match="theta"):
            E.rpg_drop(ev, np.ones((34, 34)), SENSOR, theta, rng)
    with pytest.raises(ValueError, match="saliency"):
        E.rpg_drop(ev, -np.ones((34, 34)), SENSOR, 0.5, rng)      # not normalised
    with pytest.raises(ValueError, match="saliency"):
        E.rpg_drop(ev, np.ones(34), SENSOR, 0.5, rng)
    with pytest.raises(ValueError, match="polarity"):
        E.rpg_drop(ev, np.ones((3, 34, 34)), SENSOR, 0.5, rng)


# ---------------------------------------------------------------- RPGMix (§4.3, eq. 15)
def test_sigma_eq15_on_hand_made_boxes():
    rng = np.random.default_rng(6)
    ev1, ev2 = uniform_events(3000, rng, p=0), uniform_events(3000, rng, p=1)
    # 30x30 and 20x20 boxes cannot be separated on 34x34: opposite corners, overlap 16x16 = 256 px.
    for seed in range(5):
        _, sigma, (b1, b2) = E.rpg_mix(ev1, ev2, box_map(2, 2, 31, 31), box_map(5, 8, 24, 27), SENSOR,
                                       np.random.default_rng(seed), return_boxes=True)
        assert sigma == pytest.approx((900 - 256) / (900 + 400 - 256))
        assert E.box_overlap(b1, b2) == 256
    # 10x20 and 12x30 boxes: side by side along x, no overlap, σ = 200 / (200 + 360)
    _, sigma = E.rpg_mix(ev1, ev2, box_map(3, 4, 12, 23), box_map(20, 1, 31, 30), SENSOR, rng)
    assert sigma == pytest.approx(200 / 560)
    assert E.mix_sigma(900, 400, 256) == pytest.approx(644 / 1044)


@pytest.mark.parametrize("size1,size2,case", [((30, 30), (20, 20), "neither"), ((10, 30), (12, 30), "x"),
                                              ((30, 10), (30, 12), "y"), ((10, 8), (12, 9), "both"),
                                              ((15, 12), (16, 15), "both")])
def test_place_boxes_four_cases(size1, size2, case):
    rng, corners = np.random.default_rng(7), set()
    for _ in range(200):
        p1, p2, got = E.place_boxes(size1, size2, SENSOR, rng)
        assert got == case
        b1 = (*p1, p1[0] + size1[0] - 1, p1[1] + size1[1] - 1)
        b2 = (*p2, p2[0] + size2[0] - 1, p2[1] + size2[1] - 1)
        assert min(b1 + b2) >= 0 and max(b1[2], b2[2], b1[3], b2[3]) <= 33
        expect = max(0, size1[0] + size2[0] - 34) * max(0, size1[1] + size2[1] - 34)
        assert E.box_overlap(b1, b2) == expect            # 0 whenever the boxes can be separated
        corners.add((p1[0] < p2[0], p1[1] < p2[1]))
    assert len(corners) >= 2                               # placements are spread, not one fixed layout


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 34), st.integers(1, 34), st.integers(1, 34), st.integers(1, 34), st.integers(0, 10**6))
def test_place_boxes_minimal_overlap_property(w1, h1, w2, h2, seed):
    p1, p2, _ = E.place_boxes((w1, h1), (w2, h2), SENSOR, np.random.default_rng(seed))
    b1, b2 = (*p1, p1[0] + w1 - 1, p1[1] + h1 - 1), (*p2, p2[0] + w2 - 1, p2[1] + h2 - 1)
    assert min(b1 + b2) >= 0 and max(b1[2], b2[2]) < 34 and max(b1[3], b2[3]) < 34
    assert E.box_overlap(b1, b2) == max(0, w1 + w2 - 34) * max(0, h1 + h2 - 34)


def test_cutmix_keeps_stream2_only_inside_box2():
    rng = np.random.default_rng(8)
    ev1, ev2 = uniform_events(4000, rng, p=0), uniform_events(4000, rng, p=1, t_max=3 * 10**5)
    cam1, cam2 = box_map(4, 6, 18, 25), box_map(12, 10, 27, 21)
    for seed in range(10):
        out, sigma, (b1, b2) = E.rpg_mix(ev1, ev2, cam1, cam2, SENSOR, np.random.default_rng(seed),
                                         return_boxes=True)
        assert_valid(out)
        inside = (out["x"] >= b2[0]) & (out["x"] <= b2[2]) & (out["y"] >= b2[1]) & (out["y"] <= b2[3])
        assert np.all(inside[out["p"] == 1]) and not np.any(inside[out["p"] == 0])
        # every stream-2 event of its original box survives, moved with it
        assert np.sum(out["p"] == 1) == np.sum(E._inside(ev2, (12, 10, 27, 21)))
        # stream 1: translated events still on the sensor and outside box 2
        x1, y1 = ev1["x"] + b1[0] - 4, ev1["y"] + b1[1] - 6
        on = (x1 >= 0) & (x1 < 34) & (y1 >= 0) & (y1 < 34)
        out2 = (x1 >= b2[0]) & (x1 <= b2[2]) & (y1 >= b2[1]) & (y1 <= b2[3])
        assert np.sum(out["p"] == 0) == np.sum(on & ~out2)
        assert out["t"].min() >= ev1["t"][0] and out["t"].max() <= ev1["t"][-1]   # stream 2 on stream 1's clock
        assert sigma == pytest.approx(15 * 20 / (15 * 20 + 16 * 12))


def test_rpg_mix_empty_result_returns_stream1():
    rng = np.random.default_rng(9)
    ev1 = uniform_events(500, rng, p=0, xy=(10, 21))          # all inside box 2 wherever it lands
    ev2 = uniform_events(500, rng, p=1, xy=(0, 3))            # all outside its own box
    for seed in range(5):
        out, sigma = E.rpg_mix(ev1, ev2, np.full((34, 34), np.nan), box_map(3, 3, 32, 32), SENSOR,
                               np.random.default_rng(seed))
        np.testing.assert_array_equal(out, ev1)
        assert sigma == 1.0


def test_cam_box():
    for ratio in (0.0, 1.0):                                  # a 0/1 map gives its box for either threshold
        assert E.cam_box(box_map(3, 5, 20, 9), SENSOR, ratio) == (3, 5, 20, 9)
        assert E.cam_box(np.stack([box_map(3, 5, 20, 9)] * 3), SENSOR, ratio) == (3, 5, 20, 9)   # mean over T
        assert E.cam_box(box_map(0, 0, 25, 30), SENSOR, ratio) == (0, 0, 25, 30)   # threshold capped at the max
    assert E.cam_box(np.full((4, 34, 34), np.nan), SENSOR) == (0, 0, 33, 33)
    # from 8x8: bilinear value at x is 1 - (src - 3), src = (x + 0.5)·8/34 - 0.5; ≥ mean (≈ 0.25) up to x = 17
    assert E.cam_box(box_map(0, 0, 3, 3, (8, 8)), SENSOR, std_ratio=0) == (0, 0, 17, 17)
    assert E.cam_box(box_map(0, 0, 3, 3, (8, 8)), SENSOR) == (0, 0, 15, 15)       # mean + std ≈ 0.66: x ≤ 15
    with pytest.raises(ValueError, match="cam"):
        E.cam_box(np.ones(5), SENSOR)


def test_cam_box_threshold_on_a_signed_clrp_like_map():
    """Background 0, a small positive blob, a larger negative one: after min-max the background sits
    above the mean, so the spec's mean threshold takes the whole frame; mean + std finds the blob."""
    c = np.zeros((34, 34))
    c[10:12, 10:12], c[20:24, 4:8] = 1.0, -1.0
    assert E.cam_box(c, SENSOR, std_ratio=0) == (0, 0, 33, 33)
    assert E.cam_box(c, SENSOR) == (10, 10, 11, 11)


# ---------------------------------------------------------------- the policy (§4.4, Fig. 3)
def tiny_model():
    return models.ConvSNN(10, 2, 34, width=4, rng=np.random.default_rng(0))


def left_map(x, targets):
    """A stand-in saliency / CAM function: salient left half, whatever the input."""
    s = np.zeros((x.shape[1], x.shape[2], 34, 34))
    s[..., :17] = 1.0
    return s


def batch(n, seed=10):
    rng = np.random.default_rng(seed)
    return [uniform_events(800, rng) for _ in range(n)], rng.permutation(10)[:n]


def test_policy_outputs_and_soft_labels():
    events, labels = batch(6)
    pol = E.EventRPG(tiny_model(), SENSOR, 5, mix_prob=1.0, saliency_fn=left_map, cam_fn=left_map)
    for seed in range(4):
        frames, soft = pol(events, labels, np.random.default_rng(seed))
        assert frames.shape == (5, 6, 2, 34, 34) and frames.dtype == np.float32
        assert soft.shape == (6, 10) and soft.dtype == np.float32
        np.testing.assert_allclose(soft.sum(1), 1, atol=1e-6)
        sigma = pol.last_sigma
        np.testing.assert_allclose(soft[np.arange(6), labels], sigma, atol=1e-6)
        np.testing.assert_allclose(soft[np.arange(6), np.roll(labels, -1)], 1 - sigma, atol=1e-6)
        assert np.all(frames.reshape(5, 6, -1).sum((0, 2)) > 0)


def test_policy_is_reproducible_and_keeps_labels_without_mix():
    events, labels = batch(4)
    pol = E.EventRPG(tiny_model(), SENSOR, 4, saliency_fn=left_map, cam_fn=left_map)
    a, b = pol(events, labels, np.random.default_rng(11)), pol(events, labels, np.random.default_rng(11))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    pol.mix_prob = 0.0
    _, soft = pol(events, labels, np.random.default_rng(12))
    np.testing.assert_array_equal(soft, np.eye(10)[labels])
    with pytest.raises(ValueError, match="labels"):
        pol(events, labels[:2], np.random.default_rng(0))
    # ``ops`` restricts the geometric ops (a constant saliency normalises to 0: RPGDrop drops nothing)
    flat = lambda x, t: np.full((x.shape[1], 2, 34, 34), 0.5)   # noqa: E731
    only_id = E.EventRPG(tiny_model(), SENSOR, 4, mix_prob=0.0, ops=("identity",), saliency_fn=flat)
    assert only_id.OPS == ("identity", "rpg_drop") and E.EventRPG(tiny_model(), SENSOR, 4).OPS == OPS
    for seed in range(6):
        np.testing.assert_array_equal(only_id(events, labels, np.random.default_rng(seed))[0], only_id.frames(events))


def test_policy_rpg_drop_hits_the_whole_batch_where_salient():
    events, labels = batch(3)
    pol = E.EventRPG(tiny_model(), SENSOR, 4, mix_prob=0.0, saliency_fn=left_map, cam_fn=left_map)
    seed = next(s for s in range(200) if OPS[np.random.default_rng(s).integers(10)] == "rpg_drop")
    frames, _ = pol(events, labels, np.random.default_rng(seed))
    assert pol.last_op == "rpg_drop"
    orig = pol.frames(events)
    for n in range(3):                                    # θ ≥ 0.5: at least ~half the left events go
        assert frames[:, n, ..., :17].sum() < 0.6 * orig[:, n, ..., :17].sum()
        assert frames[:, n, ..., 17:].sum() == orig[:, n, ..., 17:].sum()


@pytest.mark.parametrize("mode", ["slrp", "sltrp"])
def test_policy_with_relevance_maps(mode):
    """The default maps come from minisnn.relevance (saliency for RPGDrop, CAM before the classifier)."""
    events, labels = batch(4)
    model = tiny_model()
    for m in model.modules():      # an untrained net barely spikes (zero relevance): raise BN gains
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data *= 6
    pol = E.EventRPG(model, SENSOR, 4, mix_prob=1.0, mode=mode)
    x = pol.frames(events)
    sal, cam = pol.saliency_fn(x, labels), pol.cam_fn(x, labels)
    assert sal.shape == ((4, 2, 34, 34) if mode == "slrp" else (4, 2, 4, 34, 34))
    assert cam.shape[0] == 4 and cam.shape[-2:] == (17, 17)         # the LIF before the final pool
    assert np.all(np.abs(sal).reshape(4, -1).sum(1) > 0)
    seed = next(s for s in range(200) if OPS[np.random.default_rng(s).integers(10)] == "rpg_drop")
    model.train()
    pol.mix_prob = 0.0
    frames, _ = pol(events, labels, np.random.default_rng(seed))
    assert model.training and pol.last_op == "rpg_drop"               # maps are computed in eval mode
    assert frames.shape == (4, 4, 2, 34, 34) and frames.sum() < 0.9 * x.sum()
    pol.mix_prob = 1.0
    frames, soft = pol(events, labels, np.random.default_rng(seed))
    assert np.all((pol.last_sigma >= 0) & (pol.last_sigma <= 1))
    np.testing.assert_allclose(soft.sum(1), 1, atol=1e-6)


def test_loader_yields_soft_label_batches_and_trains():
    from data_tools.datasets import Subset
    from minisnn import optim, train

    class Tiny:
        sensor_size, classes = SENSOR, list(range(10))

        def __init__(self):
            self.items = list(zip(*batch(10, seed=13)))
            self.labels = np.array([y for _, y in self.items])

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i][0].copy(), int(self.items[i][1])
    model = tiny_model()
    loader = E.EventRPGLoader(Subset(Tiny(), np.arange(10)), 4, 3, model, np.random.default_rng(0),
                              saliency_fn=left_map, cam_fn=left_map)
    shapes = [(x.shape, y.shape) for x, y in loader]
    assert len(loader) == 3 and shapes[0] == ((3, 4, 2, 34, 34), (4, 10)) and shapes[-1][1] == (2, 10)
    before = [p.data.copy() for p in model.parameters()]
    res = train.train_epoch(model, loader, optim.Adam(model.parameters(), lr=1e-2))
    assert np.isfinite(res["loss"])
    assert any(not np.array_equal(p.data, q) for p, q in zip(model.parameters(), before))


# ---------------------------------------------------------------- non-square sensors (appendix C)
def test_maps_of_a_padded_square_input_come_back_to_a_non_square_sensor():
    """N-Cars (120 x 100) is padded to 120 x 120 and resized to 48 x 48 before the model; a map of that input goes
    back through the padding: the box of a CAM lands where the object is (a plain resize would squash it by 10 px)."""
    from data_tools.frames import pad_crop
    from minisnn import relevance
    sensor = (120, 100, 2)
    obj = np.zeros((100, 120))
    obj[70:96, 30:60] = 1.0                                         # the object: x 30-59, y 70-95
    seen = relevance.resize(pad_crop(obj, (120, 120)), (48, 48))     # what the model's map looks like
    x0, y0, x1, y1 = E.cam_box(seen, sensor, std_ratio=0.5)
    assert abs(x0 - 30) <= 2 and abs(x1 - 59) <= 2 and abs(y0 - 70) <= 2 and abs(y1 - 95) <= 2
    np.testing.assert_allclose(E.to_sensor(seen, sensor), relevance.resize(relevance.resize(
        pad_crop(obj, (120, 120)), (48, 48)), (120, 120))[10:110], atol=1e-12)
    rng = np.random.default_rng(0)
    ev = make_events(rng.integers(0, 120, 20000), rng.integers(0, 100, 20000), np.arange(20000), rng.integers(0, 2, 20000))
    out = E.rpg_drop(ev, (seen > 0.5).astype(float), sensor, 1.0, rng)
    assert not np.any((out["x"] >= 33) & (out["x"] <= 56) & (out["y"] >= 73) & (out["y"] <= 92))   # inside: gone
    assert np.sum(out["y"] < 65) == np.sum(ev["y"] < 65)            # above the object (where a squashed map is): kept
    assert E.to_sensor(np.ones((5, 6)), sensor).shape == (100, 120)  # a map of the sensor's aspect: plain resize


# ---------------------------------------------------------------- the baselines of Tables 3-5 as policies
def test_policy_variants_cam_guided_drop_nda_and_rpgmix_alone():
    events, labels = batch(3)
    right = lambda x, t: left_map(x, t)[..., ::-1]     # noqa: E731   a CAM salient on the right half
    pol = E.EventRPG(tiny_model(), SENSOR, 4, mix_prob=0.0, drop="cam", saliency_fn=left_map, cam_fn=right)
    seed = next(s for s in range(200) if OPS[np.random.default_rng(s).integers(10)] == "rpg_drop")
    frames, _ = pol(events, labels, np.random.default_rng(seed))
    orig = pol.frames(events)
    assert pol.last_op == "rpg_drop" and frames[..., :17].sum() == orig[..., :17].sum()     # the CAM guided it
    assert frames[..., 17:].sum() < 0.6 * orig[..., 17:].sum()
    nda = E.EventRPG(tiny_model(), SENSOR, 4, **E.POLICIES["NDA"])
    assert nda.OPS == augment.NDA_OPS and nda.mix_prob == 0
    mix = E.EventRPG(tiny_model(), SENSOR, 4, mix_prob=1.0, saliency_fn=left_map, cam_fn=left_map, **E.POLICIES["RPGMix"])
    assert mix.OPS == ("identity",)
    _, soft = mix(events, labels, np.random.default_rng(1))
    assert mix.last_op == "identity" and mix.last_sigma is not None and np.all(soft.max(1) < 1)
    assert E.EventRPG(tiny_model(), SENSOR, 4, **E.POLICIES["RPGDrop"]).OPS == ("identity", "rpg_drop")
    with pytest.raises(ValueError, match="drop"):
        E.EventRPG(tiny_model(), SENSOR, 4, drop="grad")


# ---------------------------------------------------------------- Table 1 in miniature
def spiking_tiny_model():
    model = tiny_model()
    for m in model.modules():      # an untrained net barely spikes: raise BN gains
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data *= 6
    return model


def test_faithfulness_rows_metrics_and_kept_share_by_hand():
    events, labels = batch(6)
    pol = E.EventRPG(tiny_model(), SENSOR, 3)
    x = pol.frames(events)
    boxes = np.array([[0, 0, 16, 33]] * 6)                          # "object": the left half
    out = E.faithfulness(spiking_tiny_model(), x, boxes, rng=np.random.default_rng(0))
    assert list(out) == list(E.TABLE1_ROWS)
    want = {f"A.{k}.{p}" for k in "DI" for p in E.PROTOCOLS} | {f"kept{b}{c}" for b in ("", " (object)", " (clutter)")
                                                                for c in ("", " clipped")}
    assert all(set(r) == want and np.all(np.isfinite(list(r.values()))) for r in out.values())
    counts = x.sum((0, 2))
    mask = counts / counts.reshape(6, -1).max(1)[:, None, None]     # counts' min is 0: min-max = / max
    kept = lambda w: 100 * np.mean((x * (mask * w)[None, :, None]).sum((0, 2, 3, 4)) / (x * w[None, :, None]).sum(  # noqa
        (0, 2, 3, 4)))
    left = np.zeros((6, 34, 34))
    left[..., :17] = 1
    r = out["event count"]
    for key, w in (("kept", np.ones_like(left)), ("kept (object)", left), ("kept (clutter)", 1 - left)):
        assert abs(r[key] - kept(w)) < 1e-4 and r[key + " clipped"] == r[key], key     # float32; counts are >= 0
    s = out["SLRP saliency"]                               # clipping negative relevance keeps fewer events
    assert s["kept clipped"] < s["kept"]
    assert abs(out["random"]["kept"] - 50) < 3
    for row in ("SLRP saliency", "SLRP-CAM", "SLRP-RelCAM", "random", "event count"):   # no T axis: per step = default
        assert out[row]["A.D. per step"] == out[row]["A.D."]
    assert any(out[row]["A.D. per step"] != out[row]["A.D."] for row in ("SLTRP saliency", "SAM", "Grad-CAM"))


def test_claims_name_existing_experiments_arms_and_metrics():
    assert len({(c.experiment, c.metric, c.baseline, c.method) for c in E.CLAIMS}) == len(E.CLAIMS)
    for c in E.CLAIMS:
        assert c.experiment in E.EXPERIMENTS and c.paper == "EventRPG" and c.quote
        arms = E.TABLE1_ROWS if "table1" in c.experiment else E.POLICIES
        assert c.baseline in arms and c.method in arms and c.baseline != c.method
        assert (c.metric, c.direction) in ((("A.I.", 1), ("A.D.", -1)) if "table1" in c.experiment else (("accuracy", 1),))


def test_cluttered_digits_put_distractors_outside_the_digit_box():
    pytest.importorskip("sklearn")
    from data_tools import datasets
    images, labels, boxes = datasets.clutter_images(0)
    digits, _ = datasets.digits_images(2.0, 0)
    assert images.shape == (1797, 28, 28) and np.all((boxes[:, 2:] - boxes[:, :2]) == 15)
    outside = []
    for img, d, (x0, y0, x1, y1) in zip(images, digits, boxes):
        np.testing.assert_array_equal(img[y0:y1 + 1, x0:x1 + 1], d)      # the digit, untouched
        rest = img.copy()
        rest[y0:y1 + 1, x0:x1 + 1] = 0
        outside.append(rest.sum() / img.sum())
    assert 0.3 < np.median(outside) < 0.5     # three whole 7 x 7 crops outside the box (measured 0.41; touching: 0.21)
    test = datasets.ClutteredDigitsDVS(train=False)
    idx = np.sort(datasets.stratified_split(labels, 0.2, 0)[1])
    np.testing.assert_array_equal(test.boxes, np.minimum(boxes[idx] + [0, 0, 7, 7], 33))
    np.testing.assert_array_equal(test.labels, labels[idx])
    ev, _ = test[0]
    inside = (ev["x"] >= test.boxes[0, 0]) & (ev["x"] <= test.boxes[0, 2]) & (ev["y"] >= test.boxes[0, 1]) & (
        ev["y"] <= test.boxes[0, 3])
    assert 0.4 < inside.mean() < 0.95                                  # most events are the digit's, not all


def test_augment_table_quick_lists_every_policy_with_a_ci():
    text = E.table("augment", seeds=2, quick=True)
    assert text.count("mean ± 95 % CI over 2 seeds (quick: not evidence)") == 2     # DigitsDVS and MotionDVS
    for name in E.POLICIES:
        assert text.count(f"| {name} | ") == 2
    assert "| arm | accuracy | train accuracy | gap |" in text
