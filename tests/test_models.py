"""Tests of the model registry, checkpoints and training (medlocker/models/)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from medlocker.data.readers import open_source
from medlocker.data.synth import generate_fundus, write_synthetic_dataset
from medlocker.errors import FormatError
from medlocker.models import (
    ARCHITECTURES,
    Classifier,
    build_classifier,
    create_backbone,
    evaluate_accuracy,
    load_checkpoint,
    save_checkpoint,
    train_classifier,
)
from medlocker.models.registry import SmallCNN

CLASSES = ("0", "1", "2", "3", "4")


# ---------------------------------------------------------------- registry


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_builds_and_runs(arch):
    # One tiny forward each; the input has another size than the model's to
    # exercise the Classifier's own resize.
    clf = build_classifier(arch, CLASSES, input_size=64).eval()
    assert isinstance(clf, Classifier) and clf.arch == arch and clf.num_classes == 5
    x = torch.rand(1, 3, 50, 70, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = clf(x)
    assert out.shape == (1, 5)
    assert torch.isfinite(out).all()


def test_registry_includes_the_required_names():
    for name in ("resnet18", "resnet50", "vgg16", "densenet121", "mobilenet_v3_large",
                 "efficientnet_b0", "convnext_tiny", "vit_b_16", "vit_tiny", "smallcnn"):
        assert name in ARCHITECTURES


def test_unknown_architecture_lists_valid_names():
    with pytest.raises(ValueError) as exc:
        create_backbone("resnet19", 5)
    assert "resnet18" in str(exc.value) and "smallcnn" in str(exc.value)


def test_vit_needs_a_multiple_of_the_patch_size():
    with pytest.raises(ValueError, match="multiple of 16"):
        create_backbone("vit_tiny", 5, input_size=60)


def test_smallcnn_is_small():
    n = sum(p.numel() for p in create_backbone("smallcnn", 5).parameters())
    assert 50_000 < n < 150_000


def test_seeded_init_is_deterministic_and_leaves_the_global_rng_alone():
    before = torch.get_rng_state()
    a = create_backbone("smallcnn", 5, seed=3)
    b = create_backbone("smallcnn", 5, seed=3)
    c = create_backbone("smallcnn", 5, seed=4)
    assert torch.equal(torch.get_rng_state(), before)
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.fc.weight, c.fc.weight)


def test_local_weights_load_into_the_backbone_and_the_head_is_resized(tmp_path):
    donor = SmallCNN(1000)
    with torch.no_grad():
        for p in donor.parameters():
            p.add_(1.0)
    path = tmp_path / "donor.pth"
    torch.save(donor.state_dict(), path)
    net = create_backbone("smallcnn", 3, weights=path)
    for k, v in donor.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(net.state_dict()[k], v), k
    assert net.fc.out_features == 3


def test_vit_weights_from_another_image_size_are_interpolated(tmp_path):
    path = tmp_path / "vit32.pth"
    torch.save(create_backbone("vit_tiny", 10, input_size=32).state_dict(), path)
    net = create_backbone("vit_tiny", 4, input_size=64, weights=path)
    assert net.encoder.pos_embedding.shape == (1, 1 + 16, 192)


def test_weights_that_do_not_fit_raise_format_error(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save(create_backbone("smallcnn", 5).state_dict(), path)
    with pytest.raises(FormatError, match="wrong.pth"):
        create_backbone("mobilenet_v3_large", 5, weights=path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a state dict")
    with pytest.raises(FormatError, match="junk.pth"):
        create_backbone("smallcnn", 5, weights=junk)


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    clf = build_classifier("smallcnn", ("none", "mild", "severe"), input_size=48, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    # Make BatchNorm running stats non-trivial so they must be saved too.
    clf.train()
    with torch.no_grad():
        clf(torch.rand(8, 3, 48, 48, generator=torch.Generator().manual_seed(1)))
    clf.eval()
    path = tmp_path / "m.pt"
    save_checkpoint(clf, path, meta={"epochs": 3, "history": {"val": [0.5, None]}, "note": "x"})
    loaded = load_checkpoint(path)
    assert isinstance(loaded, Classifier) and not loaded.training
    assert (loaded.arch, loaded.classes, loaded.input_size) == ("smallcnn", ("none", "mild", "severe"), 48)
    assert torch.equal(loaded.mean, clf.mean) and torch.equal(loaded.std, clf.std)
    assert loaded.meta == {"epochs": 3, "history": {"val": [0.5, None]}, "note": "x"}
    x = torch.rand(4, 3, 61, 53, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(clf(x), loaded(x))
    # Only plain types and tensors: loads with weights_only=True.
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "medlocker.checkpoint" and raw["version"] == 1


def test_checkpoint_rejects_non_plain_meta(tmp_path):
    clf = build_classifier("smallcnn", CLASSES, input_size=32)
    with pytest.raises(ValueError, match="meta"):
        save_checkpoint(clf, tmp_path / "m.pt", meta={"when": object()})


def test_wrong_or_corrupt_checkpoint_raises_format_error(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(build_classifier("smallcnn", CLASSES, input_size=32), good)
    payload = torch.load(good, weights_only=True)

    cases = {}
    cases["other_format.pt"] = {**payload, "format": "somebody.else"}
    cases["future_version.pt"] = {**payload, "version": 2}
    cases["unknown_arch.pt"] = {**payload, "arch": "resnet9000"}
    cases["wrong_weights.pt"] = {**payload, "state_dict": {"backbone.fc.weight": torch.zeros(2, 2)}}
    cases["plain_state_dict.pt"] = payload["state_dict"]
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
    (tmp_path / "garbage.pt").write_bytes(b"\x00garbage" * 10)
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[:500])
    with open(tmp_path / "pickled_object.pt", "wb") as f:
        pickle.dump({"format": "medlocker.checkpoint", "evil": FormatError("x")}, f, protocol=2)

    for name in [*cases, "garbage.pt", "truncated.pt", "pickled_object.pt", "missing.pt"]:
        with pytest.raises(FormatError) as exc:
            load_checkpoint(tmp_path / name)
        assert name in str(exc.value)


# ---------------------------------------------------------------- training


@pytest.fixture(scope="module")
def train_source_64(tmp_path_factory):
    """150 synthetic 64 px images (30 per grade)."""
    root = write_synthetic_dataset(tmp_path_factory.mktemp("train64"), n=150, size=64, seed=11, progress=False)
    return open_source(root)


def test_smallcnn_learns_the_synthetic_grades(train_source_64):
    clf, history = train_classifier(
        train_source_64, arch="smallcnn", epochs=14, batch_size=16, lr=4e-3, input_size=64, seed=0,
        device="cpu", val_fraction=0.2, progress=False,
    )
    assert not clf.training
    assert len(history["train_loss"]) == len(history["val_accuracy"]) == 14
    assert (history["n_train"], history["n_val"]) == (120, 30)  # stratified: 6 per grade held out
    assert history["train_loss"][-1] < 0.7 * history["train_loss"][0]
    # Held-out images from another seed. Chance is 0.2 (sd 0.04 on 100 images);
    # this run reaches about 0.46 at 64 px, where microaneurysms are ~1 px.
    test = [generate_fundus(12, i, 64) for i in range(100)]
    images = np.stack([s.image for s in test])  # [N, H, W, 3] uint8
    labels = np.array([s.label for s in test])
    assert evaluate_accuracy(clf, images, labels) >= 0.36


def test_training_is_deterministic_on_cpu(synth_dataset_dir):
    src = open_source(synth_dataset_dir)
    runs = [
        train_classifier(src, arch="smallcnn", epochs=2, batch_size=8, input_size=32, seed=5, device="cpu", progress=False)
        for _ in range(2)
    ]
    (a, ha), (b, hb) = runs
    assert ha["train_loss"] == hb["train_loss"] and ha["val_keys"] == hb["val_keys"]
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_evaluate_accuracy_inputs_and_state_restored():
    clf = build_classifier("smallcnn", CLASSES, input_size=32)
    clf.train()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10, 3, 40, 40), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        clf.eval()
        pred = clf(images.float() / 255).argmax(1)
        clf.train()
    labels = pred.clone()
    labels[:3] = (labels[:3] + 1) % 5
    assert evaluate_accuracy(clf, images, labels, batch_size=4, device="cpu") == pytest.approx(0.7)
    assert clf.training  # mode restored
    # channels-last numpy, and an iterable of (images, labels) batches
    nhwc = images.permute(0, 2, 3, 1).numpy()
    assert evaluate_accuracy(clf, nhwc, labels.numpy(), device="cpu") == pytest.approx(0.7)
    loader = [(images[:6], labels[:6]), (images[6:], labels[6:])]
    assert evaluate_accuracy(clf, loader, device="cpu") == pytest.approx(0.7)
    assert evaluate_accuracy(clf, images[:0], labels[:0]) == 0.0
