"""Active annotation: slice ranking, spread, template, and fine-tuning on the corrected template."""

import json

import numpy as np
import pytest
import tifffile

from crackseg.cli import main
from crackseg.io import write_volume
from crackseg.model_io import load_model
from crackseg.suggest import choose_slices, suggest_slices
from tests.test_finetune import phantom_2d, tiny_model


def test_choose_slices_spreads_and_skips_annotated():
    score = np.array([0.1, 0.9, 0.88, 0.87, 0.2, 0.5, 0.45, 0.1])
    assert choose_slices(score, 3, spacing=0).tolist() == [1, 2, 3]
    spread = choose_slices(score, 3, spacing=2.0).tolist()
    assert spread == [1, 3, 6]                              # 2 sits next to 1
    assert 1 not in choose_slices(score, 2, annotated=[1], spacing=2.0).tolist()
    pos = np.array([0, 10, 20])
    assert choose_slices([0.3, 0.2, 0.1], 5, positions=pos).tolist() == [0, 10, 20]
    assert choose_slices([0.3, 0.2, 0.1], 5, positions=pos, spacing=15).tolist() == [0, 20, 10]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    d = tmp_path_factory.mktemp("stack")
    pairs = [phantom_2d(i) for i in range(6)]
    img = np.stack([p[0] for p in pairs])
    img[4] += np.random.default_rng(0).normal(0, 800, img[4].shape).astype(np.float32)  # noisy
    write_volume(d / "stack.tif", img)
    return d / "stack.tif", img, np.stack([p[1] for p in pairs])


def test_suggest_2d_and_3d_models_along_any_axis(tmp_path, stack):
    _, img, _ = stack
    m2 = load_model(tiny_model(tmp_path / "t2", 2))
    s = suggest_slices(m2, img, 3, samples=2, device="cpu")
    assert len(set(s["slices"].tolist())) == 3 and all(0 <= v <= 1 for v in s["scores"])
    assert s["predicted"][0].shape == img.shape[1:]
    vol = np.repeat(img, 4, axis=0)                                    # (24, 48, 48)
    s1 = suggest_slices(m2, vol, 2, axis=2, samples=2, max_candidates=10, device="cpu")
    assert s1["axis"] == 2 and s1["predicted"][0].shape == (24, 48)
    m3 = load_model(tiny_model(tmp_path / "t3", 3, patch=16))
    s3 = suggest_slices(m3, vol, 2, axis=1, samples=2, device="cpu")
    assert s3["predicted"][0].shape == (24, 48) and len(s3["ranked"]) == 48
    with pytest.raises(Exception, match="volume or a stack"):
        suggest_slices(m2, img[0], 2)


def test_cli_writes_template_that_finetune_takes_as_is(tmp_path, stack, capsys):
    path, img, truth = stack
    model = tiny_model(tmp_path / "t2", 2)
    done = np.full(img.shape, 255, np.uint8)
    done[0] = truth[0]
    write_volume(tmp_path / "done.tif", done)
    out = tmp_path / "next"
    assert main(["suggest-slices", str(path), "--model", str(model), "-n", "2", "-o", str(out),
                 "--labels", str(tmp_path / "done.tif"), "--samples", "2",
                 "--device", "cpu"]) == 0
    meta = json.loads((out / "suggestions.json").read_text())
    chosen = [r["index"] for r in meta["suggestions"]]
    assert len(chosen) == 2 and 0 not in chosen and meta["already_annotated"] == [0]
    assert all((out / r["png"]).stat().st_size > 1000 for r in meta["suggestions"])
    tmpl = tifffile.imread(out / "labels_template.tif")
    assert tmpl.shape == img.shape and (tmpl[0] == truth[0]).all()
    annotated = sorted(np.flatnonzero((tmpl != 255).any(axis=(1, 2))).tolist())
    assert annotated == sorted([0, *chosen]) and set(np.unique(tmpl)) <= {0, 1, 2, 3, 255}
    assert "crackseg finetune" in (out / "README.txt").read_text()
    capsys.readouterr()
    assert main(["finetune", "--model", str(model), "--image", str(path), "--labels",
                 str(out / "labels_template.tif"), "-o", str(tmp_path / "ft"), "--max-steps", "2",
                 "--patch-size", "32", "32", "--batch-size", "2", "--run-dir",
                 str(tmp_path / "run"), "--quiet", "--device", "cpu"]) == 0
    card = load_model(tmp_path / "ft")[1]
    assert card["training"]["finetune"]["final"]["n_items"] == 3      # three annotated slices
    # errors in one line
    assert main(["suggest-slices", str(path), "--model", str(model), "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    write_volume(tmp_path / "one.tif", img[0])
    assert main(["suggest-slices", str(tmp_path / "one.tif"), "--model", str(model),
                 "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "stack" in err and "\n" not in err
