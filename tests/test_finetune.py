"""Fine-tuning: time schedule, class balance, folds, patches, BatchNorm, validation, resume, errors."""

import json

import numpy as np
import pytest
import torch

from crackseg.cli import main
from crackseg.finetune import finetune_model
from crackseg.finetune_data import (
    FinetunePatches,
    IntensityAugment,
    annotation_units,
    class_weights,
    fold_indices,
    make_folds,
)
from crackseg.finetune_loop import lr_factor
from crackseg.io import write_volume
from crackseg.model_io import load_model, new_card, save_model
from crackseg.nets import build_network, unet_architecture


def tiny_model(path, spatial_dims=2, *, patch=32):
    """An untrained BatchNorm U-Net model directory (nmc4)."""
    arch = unet_architecture(spatial_dims, channels=[4, 8], num_res_units=1, dropout=0.1)
    torch.manual_seed(0)
    net = build_network(arch)
    with torch.no_grad():   # non-trivial running statistics, to see whether they move
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.fill_(0.3)
                m.running_var.fill_(2.0)
    card = new_card(path.name, arch, patch_size=[patch] * spatial_dims)
    return save_model(net.eval(), card, path)


def phantom_2d(seed, shape=(48, 48)):
    """Image (bright discs, a dark crack) and its nmc4 labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    lab = np.zeros(shape, np.uint8)
    for _ in range(4):
        cy, cx, r = rng.integers(8, shape[0] - 8), rng.integers(8, shape[1] - 8), rng.integers(5, 9)
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
    lab[(lab == 1) & (np.abs(yy - xx - rng.integers(-5, 5)) < 1)] = 2
    img = np.where(lab == 1, 1.0, 0.1) + 0.05 * rng.standard_normal(shape)
    return (1000 + 3000 * img).astype(np.float32), lab


@pytest.fixture(scope="module")
def parent2d(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("m") / "tiny2d", 2)


@pytest.fixture(scope="module")
def files2d(tmp_path_factory):
    d = tmp_path_factory.mktemp("data2d")
    out = []
    for i in range(3):
        img, lab = phantom_2d(i)
        out.append((write_volume(d / f"img{i}.tif", img), write_volume(d / f"lab{i}.tif", lab)))
    return out


def _args(files):
    return [str(p) for p, _ in files], [str(q) for _, q in files]


# ---------------------------------------------------------------- pieces


def test_lr_factor_warms_up_then_follows_the_budget_to_the_floor():
    f = [lr_factor(p) for p in np.linspace(0, 1, 101)]
    assert f[0] == pytest.approx(0.1) and max(f) == pytest.approx(1.0)
    peak = int(np.argmax(f))
    assert peak == 5 and all(a >= b for a, b in zip(f[peak:], f[peak + 1:]))
    assert f[-1] == pytest.approx(0.01) and lr_factor(2.0) == pytest.approx(0.01)


def test_class_weights_favour_rare_classes():
    w = class_weights([0.9, 0.08, 0.02, 0.0])
    assert w[0] < 1 < w[1] < w[2] and w[3] == 1.0
    assert class_weights([0.5, 0.5]) == [1.0, 1.0]


def test_units_and_folds_hold_whole_slices_out():
    idx = np.full((20, 16, 16), -1, np.int16)
    for z in (2, 7, 12, 17):
        idx[z] = 1
    for y in (4, 11):
        idx[:, y] = 0
    items = [(np.zeros(idx.shape, np.float32), idx)]
    units = annotation_units(items)
    assert sorted(u[1:] for u in units) == [(0, 2), (0, 7), (0, 12), (0, 17), (1, 4), (1, 11)]
    folds = make_folds(units, 3)
    assert sorted(u for f in folds for u in f) == sorted(units) and len(folds) == 3
    train, val = fold_indices(items, [(0, 0, 7)])
    assert (train[0][1][7] == -1).all()                      # crossings with y-slices too
    assert (val[0][1][7] == idx[7]).all() and (val[0][1][:7] == -1).all()
    assert (train[0][1][2] == idx[2]).all() and (train[0][1][3, 4] == 0).all()
    assert annotation_units([(np.zeros((8, 8)), np.zeros((8, 8)))]) == [(0, None, None)]


def test_patches_oversample_rare_classes_and_are_reproducible():
    rng = np.random.default_rng(0)
    idx = np.zeros((64, 64), np.int16)
    idx[30:32, 30:33] = 2                                     # 6 crack pixels
    idx[:, :8] = -1
    img = rng.random((64, 64)).astype(np.float32)
    ds = FinetunePatches([(img, idx)], (16, 16), 4, length=300, augment=IntensityAugment(),
                         seed=1)
    centre_has_crack = np.mean([(ds[i][1] == 2).any().item() for i in range(300)])
    assert centre_has_crack > 0.35                            # 6 of 3584 annotated pixels
    x1, y1 = ds[5]
    x2, y2 = ds[5]
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.shape == (1, 16, 16)
    ds.set_epoch(1)
    assert not torch.equal(ds[5][0], x1)


def test_intensity_augment_changes_the_image_not_its_shape():
    x = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    outs = [IntensityAugment(p=1.0)(x, np.random.default_rng(s)) for s in range(5)]
    assert all(o.shape == x.shape and np.isfinite(o).all() for o in outs)
    assert all(np.abs(o - x).mean() > 1e-3 for o in outs)


# ---------------------------------------------------------------- end to end


def _bn_stats(net):
    return torch.cat([m.running_mean for m in net.modules()
                      if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)])


def test_finetune_validates_over_folds_and_keeps_bn_statistics(parent2d, files2d, tmp_path):
    images, labels = _args(files2d)
    out = finetune_model(parent2d, images, labels, tmp_path / "ft", max_steps=4,
                         validation_share=0.5, patch_size=[32, 32], batch_size=2,
                         run_dir=tmp_path / "run", quiet=True, accelerator="cpu")
    net, card = load_model(out)
    m = card["metrics"]
    assert m["n_folds"] == 3 and len(m["folds"]) == 3
    assert set(m["dice"]) == set(m["dice_sd"]) == {"matrix", "particle", "crack", "pore"}
    assert 0 <= m["dice_pooled"]["particle"] <= 1
    ft = card["training"]["finetune"]
    assert ft["steps_done"] == 4 and ft["frozen_bn"] is True and 0 < ft["train_fraction"] <= 1
    assert ft["final"]["class_weights"][2] > ft["final"]["class_weights"][0]
    assert card["parent"]["weights_sha256"] == load_model(parent2d)[1]["weights_sha256"]
    readme = (out / "README.md").read_text()
    assert "3-fold cross-validation" in readme and "| crack |" in readme
    assert torch.equal(_bn_stats(net), _bn_stats(load_model(parent2d)[0]))
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert plan["finished"] is True


def test_finetune_bn_train_updates_statistics(parent2d, files2d, tmp_path):
    images, labels = _args(files2d)
    out = finetune_model(parent2d, images[:1], labels[:1], tmp_path / "ft", max_steps=2,
                         frozen_bn=False, patch_size=[32, 32], batch_size=2,
                         run_dir=tmp_path / "run", quiet=True, accelerator="cpu")
    net, card = load_model(out)
    assert not torch.equal(_bn_stats(net), _bn_stats(load_model(parent2d)[0]))
    assert "validation" in card["metrics"]                     # one unit: says why none


def test_time_budget_is_spent_training(parent2d, files2d, tmp_path):
    images, labels = _args(files2d)
    out = finetune_model(parent2d, images, labels, tmp_path / "ft", minutes=0.1,
                         validation_share=0, patch_size=[32, 32], batch_size=2,
                         run_dir=tmp_path / "run", quiet=True, accelerator="cpu")
    ft = load_model(out)[1]["training"]["finetune"]
    assert ft["max_steps"] is None and ft["steps_done"] > 5
    assert 3.0 <= ft["final"]["train_seconds"] <= 6.5 and ft["seconds"] <= 12


def test_interrupted_finetune_resumes(parent2d, files2d, tmp_path):
    images, labels = _args(files2d)
    kw = dict(max_steps=6, validation_share=0.5, folds=2, patch_size=[32, 32], batch_size=2,
              run_dir=tmp_path / "run", quiet=True, accelerator="cpu")
    with pytest.raises(KeyboardInterrupt):
        finetune_model(parent2d, images, labels, tmp_path / "ft", stop_after_steps=3, **kw)
    assert not (tmp_path / "ft").exists()
    assert (tmp_path / "run" / "final" / "checkpoints" / "last.ckpt").exists()
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert len(state["folds"]) == 2
    out = finetune_model(parent2d, images, labels, tmp_path / "ft", **kw)
    ft = load_model(out)[1]["training"]["finetune"]
    assert ft["resumed"] is True and ft["final"]["resumed_from"].endswith("last.ckpt")
    assert ft["steps_done"] == 6
    # another plan in the same unfinished run folder is refused ...
    with pytest.raises(KeyboardInterrupt):
        finetune_model(parent2d, images, labels, tmp_path / "ft2", stop_after_steps=1,
                       **{**kw, "run_dir": tmp_path / "run2"})
    from crackseg.errors import InputError

    with pytest.raises(InputError, match="unfinished"):
        finetune_model(parent2d, images[:2], labels[:2], tmp_path / "ft2",
                       **{**kw, "run_dir": tmp_path / "run2"})


def _one_line_error(capsys, argv, match):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert match in err and "\n" not in err and "Traceback" not in err


def test_bad_inputs_fail_in_one_line_before_training(parent2d, files2d, tmp_path, capsys):
    (img, lab) = files2d[0]
    base = ["finetune", "--model", str(parent2d), "--image", str(img), "-o", str(tmp_path / "o"),
            "--run-dir", str(tmp_path / "run"), "--quiet", "--labels"]
    _, good = phantom_2d(0)
    write_volume(tmp_path / "short.tif", good[:-2])
    _one_line_error(capsys, [*base, str(tmp_path / "short.tif")], "shape")
    bad = good.copy()
    bad[0, 0] = 7
    write_volume(tmp_path / "bad.tif", bad)
    _one_line_error(capsys, [*base, str(tmp_path / "bad.tif")], "not in schema")
    write_volume(tmp_path / "none.tif", np.full_like(good, 255))
    _one_line_error(capsys, [*base, str(tmp_path / "none.tif")], "no annotated voxels")
    _one_line_error(capsys, [*base, str(lab), "--minutes", "0"], "positive")
    three = tiny_model(tmp_path / "tiny3d", 3, patch=16)
    _one_line_error(capsys, ["finetune", "--model", str(three), *base[3:], str(lab)], "3-D model")
    assert not (tmp_path / "o").exists() and not (tmp_path / "run").exists()


def test_3d_model_validates_on_slabs_around_held_out_slices(tmp_path):
    from crackseg.data import synthetic_pairs

    parent = tiny_model(tmp_path / "tiny3d", 3, patch=16)
    (img, sparse, _), = synthetic_pairs(1, (24, 32, 32), seed=3, sparse_every=8)
    write_volume(tmp_path / "img.tif", img)
    write_volume(tmp_path / "lab.tif", sparse)
    out = finetune_model(parent, [tmp_path / "img.tif"], [tmp_path / "lab.tif"], tmp_path / "ft",
                         max_steps=2, validation_share=0.5, folds=2, patch_size=[16, 16, 16],
                         run_dir=tmp_path / "run", quiet=True, accelerator="cpu")
    m = load_model(out)[1]["metrics"]
    held = [u for f in m["folds"] for u in f["held_out"]]
    assert m["n_folds"] == 2 and m["n_units"] == len(held) >= 4
    assert {u[1] for u in held} == {0, 1}                  # z- and y-slices held out
    assert m["dice_pooled"]["matrix"] is not None
