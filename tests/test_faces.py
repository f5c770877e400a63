"""Face post-processing with known answers: a known similarity transform recovered and undone, landmarks landing
on the template, one identity kept through a short occlusion, the largest face present longest chosen, smoothing
that steadies without inventing rows."""

from __future__ import annotations

import numpy as np
import pytest

from mmemo.features.faces import (
    Detection,
    DetectionSchedule,
    align_face,
    apply_transform,
    iou,
    link_tracks,
    primary_track,
    similarity_transform,
    template,
    track_rows,
    warp_affine,
)


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    r = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([r, [[tx], [ty]]])


@pytest.mark.parametrize(("angle", "scale", "tx", "ty"), [(0, 1, 0, 0), (30, 1.7, 12.5, -4), (-75, 0.4, 200, 90)])
def test_a_known_similarity_is_recovered_exactly(angle, scale, tx, ty):
    src = np.random.default_rng(0).uniform(0, 100, (5, 2))
    m = _similarity(angle, scale, tx, ty)
    np.testing.assert_allclose(similarity_transform(src, apply_transform(m, src)), m, atol=1e-9)


def test_a_reflection_is_never_fitted():
    """Mirrored landmarks get the best proper rotation, determinant > 0 (a face is never flipped by alignment)."""
    src = np.random.default_rng(1).uniform(0, 100, (5, 2))
    m = similarity_transform(src, src * [-1, 1])
    assert np.linalg.det(m[:, :2]) > 0


def _face_picture(h: int = 240, w: int = 320) -> tuple[np.ndarray, np.ndarray]:
    """A picture with five coloured discs at five landmark positions, and those positions (5, 2)."""
    img = np.full((h, w, 3), 40, np.uint8)
    pts = apply_transform(_similarity(0, 1.6, 80, 40), TEMPLATE_POINTS)
    yy, xx = np.mgrid[0:h, 0:w]
    for k, (x, y) in enumerate(pts):
        img[(xx - x) ** 2 + (yy - y) ** 2 <= 36] = (60 + 40 * k, 250 - 40 * k, 120)
    return img, pts


TEMPLATE_POINTS = template(112)


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
    img = np.full((10, 10, 3), 200, np.uint8)
    out = warp_affine(img, _similarity(0, 1, 50, 50), 64)  # the picture lands at (50..59, 50..59)
    assert out[:45, :45].max() == 0 and out[52, 52].min() == 200


def _det(x: float, y: float, size: float, score: float = 0.9) -> Detection:
    box = np.array([x, y, x + size, y + size], float)
    lm = apply_transform(_similarity(0, size / 112, x, y), TEMPLATE_POINTS)
    return Detection(box, lm, score)


def test_iou_known_values():
    a = np.array([0, 0, 10, 10.0])
    assert iou(a, a) == 1.0 and iou(a, np.array([20, 20, 30, 30.0])) == 0.0
    assert iou(a, np.array([5, 0, 15, 10.0])) == pytest.approx(50 / 150)


def test_one_identity_through_a_short_occlusion_and_two_after_a_long_one():
    """A face detected every 5 rows drifts slowly; rows 40-55 find nothing (a hand): one track. Gone for longer
    than max_gap: a new track."""
    dets = {r: [_det(100 + r * 0.5, 80, 60)] for r in range(0, 100, 5) if not 40 <= r <= 55}
    tracks = link_tracks(dets, max_gap=25)
    assert len(tracks) == 1 and tracks[0].rows[0] == 0 and tracks[0].rows[-1] == 95
    assert len(link_tracks(dets, max_gap=10)) == 2


def test_two_faces_two_tracks_and_the_largest_present_longest_is_primary():
    big_short = {r: [_det(20, 20, 90)] for r in range(0, 30, 5)}  # large, 6 detections
    small_long = {r: [_det(200, 40, 50)] for r in range(0, 100, 5)}  # smaller, 20 detections: 20 * 50^2 > 6 * 90^2
    dets = {r: big_short.get(r, []) + small_long.get(r, []) for r in range(0, 100, 5)}
    tracks = link_tracks(dets)
    assert len(tracks) == 2
    assert primary_track(tracks).detections[0].box[0] == 200
    assert primary_track([]) is None


def test_rows_between_detections_are_interpolated_smoothed_and_gaps_stay_absent():
    rng = np.random.default_rng(0)
    dets = {r: [_det(100 + r + rng.normal(0, 3), 80, 60)] for r in range(0, 60, 5)}
    dets.update({r: [_det(160 + r + rng.normal(0, 3), 80, 60)] for r in range(100, 120, 5)})
    tracks = link_tracks(dets, max_gap=25, min_iou=0.1)
    track = primary_track(tracks)
    raw = track_rows(track, 130, smooth=1)
    assert raw.present[0:56].all() and not raw.present[56:].any()  # the other track is not this face
    assert np.isnan(raw.boxes[60]).all() and np.isnan(raw.landmarks[60]).all()
    np.testing.assert_allclose(raw.boxes[7], (raw.boxes[5] * 3 + raw.boxes[10] * 2) / 5, rtol=1e-5)
    smooth = track_rows(track, 130, smooth=15)
    assert (smooth.present == raw.present).all()
    rows = np.arange(10, 46)  # the face moves 1 px a row: the error from that line is the detector's jitter

    def err(b):
        return np.abs(b[rows, 0] - (100 + rows)).mean()

    assert err(smooth.boxes) < 0.75 * err(raw.boxes)
    empty = track_rows(None, 10)
    assert not empty.present.any() and empty.landmarks.shape == (10, 5, 2) and empty.boxes.dtype == np.float32


def test_the_schedule_detects_every_kth_row_and_again_after_a_miss():
    s = DetectionSchedule(every=5)
    due = []
    for row in range(12):
        if s.due(row):
            due.append(row)
            s.found(row not in (5, 6))  # the face is missed at rows 5 and 6
    assert due == [0, 5, 6, 7, 10]
    with pytest.raises(ValueError):
        DetectionSchedule(every=0)
