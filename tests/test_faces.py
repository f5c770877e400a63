"""Face post-processing with known answers.

Alignment: a known similarity transform recovered and undone, landmarks landing on the template, black outside the
picture, IoU values. Tracking (``FaceTracker``): a scripted fake detector says which faces each picture holds (keyed
on an id written into the picture's first pixel) and records which pictures it was asked about, so the schedule,
the followed face, the interpolated rows, the look-back, the smoothing, the order and delay of the rows given back
and the cache are all checked against known answers. The detector is not what is tested here; the tracker is.
"""

from __future__ import annotations

import numpy as np
import pytest

from mmemo.features.faces import (
    ArrayPicture,
    Detection,
    FaceOptions,
    FaceRow,
    FaceTracker,
    align_face,
    apply_transform,
    box_factors,
    box_reduce,
    iou,
    similarity_transform,
    template,
    warp_affine,
)


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    r = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([r, [[tx], [ty]]])


# ------------------------------------------------------------------------------------------------------- alignment
@pytest.mark.parametrize(("angle", "scale", "tx", "ty"), [(0, 1, 0, 0), (30, 1.7, 12.5, -4), (-75, 0.4, 200, 90)])
def test_a_known_similarity_is_recovered_exactly(angle, scale, tx, ty):
    """Points moved by a known rotation, scale and translation give that transform back to 1e-9."""
    src = np.random.default_rng(0).uniform(0, 100, (5, 2))
    m = _similarity(angle, scale, tx, ty)
    np.testing.assert_allclose(similarity_transform(src, apply_transform(m, src)), m, atol=1e-9)


def test_a_reflection_is_never_fitted():
    """Mirrored landmarks get the best proper rotation, determinant > 0 (a face is never flipped by alignment)."""
    src = np.random.default_rng(1).uniform(0, 100, (5, 2))
    m = similarity_transform(src, src * [-1, 1])
    assert np.linalg.det(m[:, :2]) > 0


TEMPLATE_POINTS = template(112)


def _face_picture(h: int = 240, w: int = 320) -> tuple[np.ndarray, np.ndarray]:
    """A picture with five coloured discs at five landmark positions, and those positions (5, 2)."""
    img = np.full((h, w, 3), 40, np.uint8)
    pts = apply_transform(_similarity(0, 1.6, 80, 40), TEMPLATE_POINTS)
    yy, xx = np.mgrid[0:h, 0:w]
    for k, (x, y) in enumerate(pts):
        img[(xx - x) ** 2 + (yy - y) ** 2 <= 36] = (60 + 40 * k, 250 - 40 * k, 120)
    return img, pts


def test_alignment_undoes_a_known_rotation_and_scale():
    """A face picture rotated by 25 degrees and scaled by 0.7 (a known transform) comes out of alignment as the
    upright picture does: both crops agree pixel for pixel within interpolation error."""
    img, pts = _face_picture()
    upright, _ = align_face(img, pts, 112)
    m = _similarity(25, 0.7, 60, 10)
    turned = warp_affine(img, m, 400)
    crop, fitted = align_face(turned, apply_transform(m, pts), 112)
    np.testing.assert_allclose(apply_transform(fitted, apply_transform(m, pts)), TEMPLATE_POINTS, atol=1e-6)
    diff = np.abs(crop.astype(int) - upright.astype(int))
    assert np.median(diff) <= 1 and np.mean(diff) < 6


def test_the_landmarks_land_on_the_template():
    """The eyes of the aligned crop sit within a pixel of their template positions (their discs' centroids)."""
    img, pts = _face_picture()
    crop, _ = align_face(img, pts, 112)
    for k in (0, 1):  # left eye, right eye: find each disc by its colour
        colour = np.array((60 + 40 * k, 250 - 40 * k, 120))
        ys, xs = np.nonzero(np.abs(crop.astype(int) - colour).sum(-1) < 30)
        assert abs(xs.mean() - TEMPLATE_POINTS[k, 0]) < 1 and abs(ys.mean() - TEMPLATE_POINTS[k, 1]) < 1


def test_warp_fills_outside_with_black():
    """A 10 x 10 picture translated to (50, 50) in a 64-px crop: black everywhere but its own square."""
    img = np.full((10, 10, 3), 200, np.uint8)
    out = warp_affine(img, _similarity(0, 1, 50, 50), 64)  # the picture lands at (50..59, 50..59)
    assert out[:45, :45].max() == 0 and out[52, 52].min() == 200


def _checkerboard(h: int, w: int) -> np.ndarray:
    """(h, w, 3) uint8: black and white alternating pixel by pixel, the picture that aliases most."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.repeat((((yy + xx) % 2) * 255).astype(np.uint8)[..., None], 3, axis=2)


def test_box_reduce_known_values_and_pillow():
    """Block means rounded half up (partial blocks at the edges average what they have), and within one level of
    Pillow's Image.reduce (its fixed-point division), which FramePicture uses on the decoder's planes."""
    img = np.arange(5 * 7 * 1, dtype=np.uint8).reshape(5, 7, 1)
    got = box_reduce(img, 3, 2)[..., 0]
    # rows 0-1 x cols 0-2: (0+1+2+7+8+9)/6 = 4.5 -> 5; cols 6 (partial): (6+13)/2 = 9.5 -> 10; row 4 (partial):
    # (28+29+30)/3 = 29
    assert got.shape == (3, 3) and got[0, 0] == 5 and got[0, 2] == 10 and got[2, 0] == 29
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    pil = np.asarray(Image.fromarray(rgb).reduce((3, 2)))
    assert np.abs(box_reduce(rgb, 3, 2).astype(int) - pil).max() <= 1


def test_a_face_larger_than_its_crop_is_averaged_not_aliased():
    """A 1-pixel checkerboard shrunk 4 times (rotated a little, shifted by a fraction of a pixel) is flat grey
    (each 4 x 4 block averages to 127.5): bilinear sampling alone would read single black or white pixels."""
    img = _checkerboard(400, 400)
    out = warp_affine(img, _similarity(7, 0.25, 3.3, 2.7), 64)[20:60, 20:60]  # inside the picture
    assert np.abs(out.astype(int) - 128).max() <= 1
    assert box_factors(np.linalg.inv(np.vstack([_similarity(7, 0.25, 0, 0), [0, 0, 1]]))) == (
        4,
        4,
    )  # 4 px a crop px, turned or not


def test_a_decoded_frame_larger_than_its_crop_is_averaged_not_aliased(tmp_path):
    """The same on the decoder's planes: a checkerboard clip encoded losslessly (H.264, qp 0, 4:4:4), cropped by
    ``FramePicture.warp`` at a quarter of its size, is flat grey: Y 16 / 235 averages to 125.5 -> 126, RGB 128."""
    import av

    from mmemo.media.decode import decode_media

    path = tmp_path / "checker.mp4"
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=25)
        vs.width = vs.height = 400
        vs.pix_fmt = "yuv444p"
        vs.options = {"qp": "0", "preset": "ultrafast"}
        for _ in range(3):
            c.mux(
                vs.encode(
                    av.VideoFrame.from_ndarray(_checkerboard(400, 400), format="rgb24").reformat(format="yuv444p")
                )
            )
        c.mux(vs.encode(None))
    pictures = []
    decode_media(path, use_audio=False, on_frames=lambda chunk: None, on_picture=pictures.append)
    crop = pictures[1].warp(_similarity(7, 0.25, 3.3, 2.7), 64)[20:60, 20:60]
    assert np.abs(crop.astype(int) - 128).max() <= 2


def test_iou_known_values():
    """Identical boxes 1, disjoint 0, half-shifted 50 / 150."""
    a = np.array([0, 0, 10, 10.0])
    assert iou(a, a) == 1.0 and iou(a, np.array([20, 20, 30, 30.0])) == 0.0
    assert iou(a, np.array([5, 0, 15, 10.0])) == pytest.approx(50 / 150)


# ------------------------------------------------------------------------------------- the tracker, scripted
H, W = 64, 160  # pictures this small are never decimated for the detector (detect_size 320): coordinates exact


def _picture(pid: int, seed: int | None = None) -> ArrayPicture:
    """A picture whose first pixel holds ``pid`` (what the fake detector keys on); random pixels elsewhere so
    that crops are not blank."""
    rgb = np.random.default_rng(pid if seed is None else seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    rgb[0, 0, 0], rgb[0, 0, 1] = pid % 256, pid // 256
    return ArrayPicture(rgb)


def _pid(rgb: np.ndarray) -> int:
    return int(rgb[0, 0, 0]) + 256 * int(rgb[0, 0, 1])


def _det(x: float, y: float = 10.0, size: float = 20.0, score: float = 0.9) -> Detection:
    """A face whose box is the square (x, y, size) and whose landmarks are the template scaled into it."""
    box = np.array([x, y, x + size, y + size], float)
    return Detection(box, TEMPLATE_POINTS * (size / 112) + [x, y], score)


class Script:
    """A fake detector: the faces of each picture, by the id in its first pixel (``faces(pid) -> detections``).
    ``calls``: the ids it was asked about, in order."""

    def __init__(self, faces) -> None:
        self.faces = faces
        self.calls: list[int] = []

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        assert rgb.shape == (H, W, 3)  # the tracker passes the picture at full size (no decimation below 320 px)
        pid = _pid(rgb)
        self.calls.append(pid)
        return list(self.faces(pid))


def _run(tracker: FaceTracker, pictures) -> list[FaceRow]:
    rows = []
    for p in pictures:
        rows += tracker.push(p)
    return rows + tracker.finish()


def _track(faces, n: int, **options) -> tuple[list[FaceRow], Script, FaceTracker]:
    """Every row of an ``n``-row clip whose picture ``t`` holds ``faces(t)``, tracked with ``options``."""
    script = Script(faces)
    tracker = FaceTracker(script, FaceOptions(size=16, **options))
    rows = _run(tracker, [_picture(t) for t in range(n)])
    assert [r.row for r in rows] == list(range(n))
    return rows, script, tracker


def _mask(rows: list[FaceRow]) -> np.ndarray:
    return np.array([r.present for r in rows])


def _boxes(rows: list[FaceRow]) -> np.ndarray:
    return np.stack([r.box for r in rows]).astype(np.float64)


def test_options_out_of_range_are_refused():
    """every < 1, smooth < 1 or a crop under 8 px: ValueError at construction."""
    for bad in ({"every": 0}, {"smooth": 0}, {"size": 4}):
        with pytest.raises(ValueError):
            FaceTracker(Script(lambda pid: []), FaceOptions(**bad))


def test_a_followed_face_is_detected_on_every_kth_row_only():
    """A face on every row of 23, every=5: the detector runs on rows 0, 5, 10, 15, 20 and, at finish, once more
    on the last row (22) to decide rows 21-22; every row has the face."""
    rows, script, tracker = _track(lambda t: [_det(20)], 23, every=5)
    assert script.calls == [0, 5, 10, 15, 20, 22] and tracker.n_detections == 6
    assert _mask(rows).all() and tracker.follows == 1 and tracker.multi == 0


def test_after_a_loss_every_row_is_searched_for_max_gap_rows_then_every_kth_again():
    """The face is on rows 0-9 only (every=5, max_gap=8). Row 10 misses it, so rows 6-9 are looked at one by one
    (it is still there: last seen on row 9); then every row 11-17 is searched (17 = 9 + max_gap); then back to
    every 5th row from the last search (22, 27, ...), and the last row (59) at finish."""
    rows, script, _ = _track(lambda t: [_det(20)] if t < 10 else [], 60, every=5, max_gap=8)
    assert script.calls == [0, 5, 10, 6, 7, 8, 9, *range(11, 18), *range(22, 58, 5), 59]
    np.testing.assert_array_equal(_mask(rows), np.arange(60) < 10)


def test_a_clip_without_a_face_is_detected_on_every_kth_row():
    """Never a face, 30 rows, every=5: the detector runs on rows 0, 5, ..., 25 and 29 (finish), nothing more;
    no row has a face, no face was followed."""
    rows, script, tracker = _track(lambda t: [], 30, every=5)
    assert script.calls == [0, 5, 10, 15, 20, 25, 29]
    assert not _mask(rows).any() and tracker.follows == 0
    for r in rows:
        assert r.crop is None and np.isnan(r.box).all() and np.isnan(r.landmarks).all() and np.isnan(r.score)


def test_rows_between_two_detections_are_interpolated_linearly():
    """With smooth=1, rows between two detection rows get exactly the straight line between them (box,
    landmarks, score); what the detector would have said on those rows (far off) is never asked, and the crop is
    the picture warped by the row's own landmarks."""
    x = {0: 20.0, 5: 30.0, 10: 14.0}  # detection rows; any other row would report the face at x = 40
    score = {0: 0.9, 5: 0.8, 10: 1.0}
    rows, script, _ = _track(lambda t: [_det(x.get(t, 40.0), score=score.get(t, 0.5))], 11, every=5, smooth=1)
    assert script.calls == [0, 5, 10]
    expect = np.interp(np.arange(11), [0, 5, 10], [20, 30, 14])
    np.testing.assert_allclose(_boxes(rows)[:, 0], expect, atol=1e-5)
    np.testing.assert_allclose(_boxes(rows)[:, 2], expect + 20, atol=1e-5)
    np.testing.assert_allclose([r.score for r in rows], np.interp(np.arange(11), [0, 5, 10], [0.9, 0.8, 1.0]))
    for t, r in enumerate(rows):
        np.testing.assert_allclose(r.landmarks, TEMPLATE_POINTS * (20 / 112) + [expect[t], 10], atol=1e-4)
        m = similarity_transform(r.landmarks.astype(np.float64), template(16))
        assert np.abs(r.crop.astype(int) - _picture(t).warp(m, 16).astype(int)).max() <= 1


def test_one_identity_through_a_short_occlusion():
    """A face at x=20 on rows 0-39 and 52-99 (rows 40-51 occluded: 12 < max_gap=25). When it comes back a larger
    face has appeared at x=100; the followed one is kept (its box overlaps the last one). Rows 40-51 are absent,
    not filled; every present row is the x=20 face; one face followed, the two-face runs counted in ``multi``."""
    occluded = range(40, 52)

    def faces(t):
        return [] if t in occluded else [_det(20)] + ([_det(100, size=40)] if t >= 52 else [])

    rows, _, tracker = _track(faces, 100, every=5, max_gap=25)
    np.testing.assert_array_equal(_mask(rows), ~np.isin(np.arange(100), occluded))
    assert (_boxes(rows)[_mask(rows), 0] == 20).all()
    assert np.isnan(_boxes(rows)[40:52]).all() and all(r.crop is None for r in rows[40:52])
    assert tracker.follows == 1 and tracker.multi > 0


def test_a_new_largest_face_is_followed_after_a_long_loss():
    """The same, but the face is gone on rows 40-79 (40 > max_gap=25): on rows 80-99 the larger x=100 face is
    followed, not the x=20 one that came back where the old face was. Rows 40-79 absent; two faces followed."""

    def faces(t):
        return [] if 40 <= t < 80 else [_det(20)] + ([_det(100, size=40)] if t >= 80 else [])

    rows, _, tracker = _track(faces, 100, every=5, max_gap=25)
    mask, x0 = _mask(rows), _boxes(rows)[:, 0]
    np.testing.assert_array_equal(mask, (np.arange(100) < 40) | (np.arange(100) >= 80))
    assert (x0[:40] == 20).all() and (x0[80:] == 100).all()
    assert tracker.follows == 2


def test_a_lone_face_a_short_step_away_is_the_same_face_and_a_far_one_is_not():
    """A lone 20-px face at x=20 on rows 0-29 steps to x=35 from row 30 (IoU 0.14 < min_iou, but its centre moved
    15 px, less than a face width): the same face, every row present. Stepping to x=60 instead (40 px away), it is
    someone else: rows 30-39 are absent (searched on rows 31-34, max_gap=5, then on row 39, where the old face is
    let go), and from row 40 on (found on row 44, looked back to 40) the new face is followed."""
    near, _, tracker = _track(lambda t: [_det(20 if t < 30 else 35)], 60, every=5, max_gap=5, smooth=1)
    assert _mask(near).all() and tracker.follows == 1 and (_boxes(near)[30:, 0] == 35).all()
    far, script, tracker = _track(lambda t: [_det(20 if t < 30 else 60)], 60, every=5, max_gap=5, smooth=1)
    np.testing.assert_array_equal(_mask(far), ~np.isin(np.arange(60), range(30, 40)))
    assert script.calls[:15] == [0, 5, 10, 15, 20, 25, 30, 26, 27, 28, 29, 31, 32, 33, 34]
    assert script.calls[15:21] == [39, 44, 43, 42, 41, 40]
    assert tracker.follows == 2 and (_boxes(far)[40:, 0] == 60).all()


def test_the_largest_face_is_followed_when_two_are_there_from_the_start():
    """Two faces on every row (sizes 20 and 30): every row holds the larger one; every detector run saw two."""
    rows, script, tracker = _track(lambda t: [_det(5), _det(30, size=30)], 40, every=5)
    assert _mask(rows).all() and (_boxes(rows)[:, 0] == 30).all() and (_boxes(rows)[:, 2] == 60).all()
    assert tracker.multi == tracker.n_detections == len(script.calls) and tracker.follows == 1


def test_the_look_back_finds_the_row_where_a_face_disappears():
    """The face is on rows 0-12 only: detected on 10, missed on 15, so rows 11, 12, 13 are looked at (13: gone,
    the look stops): exactly rows 0-12 have a face."""
    rows, script, _ = _track(lambda t: [_det(20)] if t <= 12 else [], 30, every=5)
    assert script.calls[:7] == [0, 5, 10, 15, 11, 12, 13]
    np.testing.assert_array_equal(_mask(rows), np.arange(30) <= 12)


def test_the_look_back_finds_the_row_where_a_face_appears():
    """The face is on rows 17-39 only: missed on 15, found on 20, so rows 19, 18, 17, 16 are looked at backwards
    (16: not there yet, the look stops): exactly rows 17-39 have a face, with its box."""
    rows, script, _ = _track(lambda t: [_det(20)] if t >= 17 else [], 40, every=5)
    assert script.calls[:9] == [0, 5, 10, 15, 20, 19, 18, 17, 16]
    np.testing.assert_array_equal(_mask(rows), np.arange(40) >= 17)
    assert (_boxes(rows)[17:, 0] == 20).all()


def test_smoothing_steadies_a_noisy_line_and_never_makes_absent_rows_present():
    """A face moving 0.5 px a row with detector noise (sd 2 px) on every row (every=1), occluded on rows 40-45.
    With smooth=9 its mean distance from the true line is under 0.6 of the raw one's, the same rows are present,
    the occluded rows stay absent (NaN), and each run's ends are averaged only over that run's rows."""
    noise = np.random.default_rng(0).normal(0, 2, 100)
    truth = 10 + 0.5 * np.arange(100)

    def faces(t):
        return [] if 40 <= t < 46 else [_det(truth[t] + noise[t])]

    raw, _, _ = _track(faces, 100, every=1, smooth=1)
    smooth, _, _ = _track(faces, 100, every=1, smooth=9)
    present = ~np.isin(np.arange(100), range(40, 46))
    np.testing.assert_array_equal(_mask(raw), present)
    np.testing.assert_array_equal(_mask(smooth), present)
    assert np.isnan(_boxes(smooth)[40:46]).all()
    inner = present & (np.arange(100) >= 4) & (np.arange(100) < 96)
    inner[36:50] = False  # away from the run ends, where the window is cut short

    def err(rows):
        return np.abs(_boxes(rows)[inner, 0] - truth[inner]).mean()

    assert err(smooth) < 0.6 * err(raw)
    x = _boxes(raw)[:, 0]  # the known window: row 39 (last of its run) averages rows 35-39, row 46 rows 46-50
    np.testing.assert_allclose(_boxes(smooth)[39, 0], x[35:40].mean(), atol=1e-4)
    np.testing.assert_allclose(_boxes(smooth)[46, 0], x[46:51].mean(), atol=1e-4)
    np.testing.assert_allclose(_boxes(smooth)[20, 0], x[16:25].mean(), atol=1e-4)


@pytest.mark.parametrize(("every", "smooth", "max_gap"), [(5, 5, 25), (5, 5, 3), (1, 3, 10), (3, 7, 10), (7, 1, 5)])
def test_every_row_comes_back_once_in_order_within_the_latency_bound(every, smooth, max_gap):
    """A face that comes and goes at random (runs of 1-15 rows), 300 rows: each row comes back exactly once, in
    order, and each row given back by ``push`` comes no later than ``every + smooth // 2`` pushes after its own;
    ``finish`` gives back exactly the rest."""
    rng = np.random.default_rng(every * 100 + smooth * 10 + max_gap)
    present = np.concatenate([np.full(rng.integers(1, 16), i % 2 == 0) for i in range(60)])[:300]
    tracker = FaceTracker(Script(lambda t: [_det(20)] if present[t] else []),
                          FaceOptions(size=8, every=every, smooth=smooth, max_gap=max_gap))  # fmt: skip
    got, late = [], 0
    for t in range(300):
        for r in tracker.push(_picture(t, seed=0)):
            got.append(r.row)
            late = max(late, t - r.row)
    rest = [r.row for r in tracker.finish()]
    assert got + rest == list(range(300)) and late <= every + smooth // 2
    assert len(rest) <= every + smooth // 2


def test_rows_without_a_picture_at_the_start_and_end_are_absent():
    """``push(None)`` (nothing on screen: before the first frame, after the last) is an absent row, never
    detected; the face rows between are found as usual."""
    script = Script(lambda t: [_det(20)])
    tracker = FaceTracker(script, FaceOptions(size=8))
    rows = _run(tracker, [None] * 3 + [_picture(t) for t in range(3, 20)] + [None] * 4)
    assert [r.row for r in rows] == list(range(24))
    np.testing.assert_array_equal(_mask(rows), (np.arange(24) >= 3) & (np.arange(24) < 20))
    assert script.calls[0] == 3 and max(script.calls) == 19


def test_the_latency_bound_holds_across_rows_without_a_picture():
    """Rows 22-39 have no picture (push(None)) in a clip with a face on every other row: every row still comes
    back within ``every + smooth // 2`` pushes (rows 20-21 are undecided when the pictures stop)."""
    tracker = FaceTracker(Script(lambda t: [_det(20)]), FaceOptions(size=8))
    late = 0
    for t in range(60):
        for r in tracker.push(None if 22 <= t < 40 else _picture(t, seed=0)):
            late = max(late, t - r.row)
    assert late <= 5 + 5 // 2


def test_a_picture_shown_on_consecutive_rows_is_detected_once():
    """A 12.5 fps source on the 25 fps grid: each picture is shown on two rows (the same object). Detecting on
    every row (every=1), the detector still runs once per picture, and both rows of a picture get its box."""
    distinct = [_picture(k) for k in range(20)]
    script = Script(lambda pid: [_det(10 + pid)])
    tracker = FaceTracker(script, FaceOptions(size=8, every=1, smooth=1))
    rows = _run(tracker, [distinct[t // 2] for t in range(40)])
    assert script.calls == list(range(20)) and tracker.n_detections == 20
    np.testing.assert_allclose(_boxes(rows)[:, 0], 10 + np.arange(40) // 2)
