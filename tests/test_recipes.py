"""Images kept as recipes (data.store_inputs): rows remade bit for bit, both modes give the same
batches and the same student, and an input that does not remake as the teacher saw it is refused."""

from __future__ import annotations

import dataclasses
import glob
import io
import shutil
from importlib.metadata import version

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipeline import shards
from pipeline.config import Config, DataConfig, LabelConfig, ParameterConfig, TaskConfig, TeacherConfig
from pipeline.errors import ConfigError, UserError
from pipeline.inputs import get_space, image_recipes, images
from pipeline.kinds import check_kinds
from pipeline.label.storage_mode import RECIPE_RATIO, keeps_recipes
from pipeline.shards.recipes import SEED_FILE
from pipeline.shards.schema import make_table
from pipeline.shards.writer import serialize
from pipeline.tasks.worst import decode_input
from tests.conftest import shared_ray, tiny_config

MIXED = DataConfig(mixup_fraction=0.3, noise_fraction=0.2)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 20, 24)])
def test_a_row_renders_alone_as_it_did_in_its_batch(shape):
    seeds = np.random.default_rng(0).integers(0, 256, (12, *shape), dtype=np.uint8)
    pixels, kinds, recipes = images.generate_recipes(seeds, MIXED, seed=7, count=300)
    assert set(np.unique(kinds)) == {image_recipes.AUGMENT, image_recipes.MIXUP, image_recipes.NOISE}
    alone = np.concatenate([image_recipes.render(recipes[i:i + 1], seeds) for i in range(len(recipes))])
    order = np.random.default_rng(1).permutation(len(recipes))
    assert np.array_equal(alone, pixels)
    assert np.array_equal(image_recipes.render(recipes[order], seeds), pixels[order])
    # The pixel mode's generator is the same renderer.
    assert np.array_equal(images.generate_inputs(seeds, MIXED, seed=7, count=300)[0], pixels)


def test_a_row_renders_the_same_whatever_the_processes_thread_count():
    """Labeling (a Ray worker), a DataLoader worker and the driver run torch on different numbers of
    threads; bilinear upsampling of the noise patterns rounds differently across threads at this size."""
    shape = (3, 96, 96)
    seeds = np.random.default_rng(0).integers(0, 256, (4, *shape), dtype=np.uint8)
    _, _, recipes = images.generate_recipes(seeds, DataConfig(mixup_fraction=0.3, noise_fraction=0.5), seed=5, count=48)
    threads = torch.get_num_threads()
    try:
        made = {}
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            made[n] = image_recipes.render(recipes, seeds)
            assert torch.get_num_threads() == n  # the process's own setting is left as it was
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(made[1], made[2]) and np.array_equal(made[1], made[3])


def test_recipes_are_exact_in_float64():
    seeds = np.zeros((3, 1, 8, 8), np.uint8)
    _, _, recipes = images.generate_recipes(seeds, MIXED, seed=3, count=200)
    seed_columns = [image_recipes.COLUMN[c] for c in ("a_noise_seed", "b_noise_seed", "pattern_seed")]
    assert np.all(recipes[:, seed_columns] < image_recipes.SEED_LIMIT)
    other = [i for i in range(image_recipes.WIDTH) if i not in seed_columns]
    assert np.array_equal(recipes[:, other].astype(np.float32).astype(np.float64), recipes[:, other])


def test_auto_keeps_recipes_for_large_inputs_only():
    space = get_space("images")
    cfg = Config()
    recipe, why = keeps_recipes(cfg, space, [3, 224, 224], 1000)
    assert recipe and "recipes" in why and "150,528" in why
    recipe, why = keeps_recipes(cfg, space, [1, 8, 8], 10)
    assert not recipe and "pixels" in why and f"under {RECIPE_RATIO}" in why
    # Top-k targets are smaller, so a smaller input already pays.
    topk = dataclasses.replace(cfg, label=LabelConfig(top_k=5))
    assert keeps_recipes(topk, space, [1, 28, 28], 1000)[0] and not keeps_recipes(cfg, space, [1, 28, 28], 1000)[0]
    forced = dataclasses.replace(cfg, data=DataConfig(store_inputs="pixels"))
    assert keeps_recipes(forced, space, [3, 224, 224], 1000)[0] is False
    assert keeps_recipes(cfg, get_space("vectors"), [4], 2) == (False, "")


def test_a_space_without_recipes_refuses_them():
    cfg = Config(task=TaskConfig(kind="regression"), teacher=TeacherConfig(kind="callable", arch="my_sim:run"),
                 data=DataConfig(space="vectors", parameters=[ParameterConfig("a", 0.0, 1.0)], store_inputs="recipe"))
    with pytest.raises(ConfigError, match="data.store_inputs recipe is for generated images"):
        check_kinds(cfg)


def test_a_recipe_row_is_under_a_hundredth_of_a_224_pixel_row():
    seeds = np.random.default_rng(0).integers(0, 256, (4, 3, 224, 224), dtype=np.uint8)
    pixels, kinds, recipes = images.generate_recipes(seeds, MIXED, seed=1, count=64)
    logits = np.random.default_rng(2).normal(size=(64, 1000)).astype(np.float16)
    ids = np.arange(64)
    as_pixels = serialize(make_table(ids, 1, kinds, pixels, logits, {}, top_k=5), 64)
    as_recipes = serialize(make_table(ids, 1, kinds, pixels, logits, {}, top_k=5, recipes=recipes), 64)
    assert len(as_recipes) / len(as_pixels) < 0.01


@pytest.fixture(scope="module")
def both_modes(tmp_path_factory):
    """One teacher, labeled into two runs: inputs as pixels and as recipes."""
    from pipeline.label.stage import run_label_stage
    from pipeline.teach.stage import run_teacher_stage

    shared_ray()
    root = tmp_path_factory.mktemp("modes")
    runs = {}
    for mode in ("pixels", "recipe"):
        cfg = tiny_config(root / mode, data={"store_inputs": mode, "mixup_fraction": 0.3, "noise_fraction": 0.1})
        if runs:  # the same teacher: store_inputs is how the shards keep inputs, not part of the run
            shutil.copytree(runs["pixels"].out, cfg.out)
            shutil.rmtree(f"{cfg.out}/shards")
        else:
            run_teacher_stage(cfg)
        run_label_stage(cfg)
        runs[mode] = cfg
    return runs


def _split(cfg, split="train"):
    split_dir = f"{cfg.out}/shards/{split}"
    return split_dir, shards.require_manifest(split_dir)


def test_recipe_shards_keep_no_pixels_and_record_what_remakes_them(both_modes):
    split_dir, manifest = _split(both_modes["recipe"])
    shard = shards.open_shard(split_dir, manifest.records()[0])
    assert "input" not in shard.schema_arrow.names and {"recipe", "input_hash"} <= set(shard.schema_arrow.names)
    assert manifest.recipe["file"] == SEED_FILE
    assert manifest.recipe["libraries"] == {name: version(name) for name in ("torch", "torchvision", "Pillow", "numpy")}
    assert _split(both_modes["pixels"])[1].recipe is None


def test_both_modes_read_the_same_rows_and_batches(both_modes):
    pixels_dir, pixels_manifest = _split(both_modes["pixels"])
    recipe_dir, recipe_manifest = _split(both_modes["recipe"])
    a, b = shards.read_split(pixels_dir, pixels_manifest), shards.read_split(recipe_dir, recipe_manifest)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Streaming, remade in a loader worker process, across row groups (batch 48, groups of 64).
    loader = lambda d, m: torch.utils.data.DataLoader(shards.ShardStream(d, m, 48, seed=3), batch_size=None,  # noqa: E731
                                                       num_workers=1)
    for x, y in zip(loader(pixels_dir, pixels_manifest), loader(recipe_dir, recipe_manifest), strict=True):
        assert all(torch.equal(x[k], y[k]) for k in x)


def test_both_modes_train_the_same_student_and_the_recipe_run_evaluates(both_modes, tmp_path):
    from pipeline.evaluate.stage import run_eval_stage
    from pipeline.train.stage import run_train_stage

    weights = {}
    for mode, cfg in both_modes.items():
        cfg = dataclasses.replace(cfg, out=str(tmp_path / mode))
        shutil.copytree(both_modes[mode].out, cfg.out)
        run_train_stage(cfg)
        weights[mode] = load_file(glob.glob(f"{cfg.out}/student/*.safetensors")[0])
    assert all(torch.equal(weights["pixels"][k], weights["recipe"][k]) for k in weights["pixels"])
    cfg = dataclasses.replace(both_modes["recipe"], out=str(tmp_path / "recipe"))
    cfg.eval = dataclasses.replace(cfg.eval, latency=False)
    report = run_eval_stage(cfg)
    assert report.agreement["heldout"]["samples"] == 256 and report.agreement["train"]["samples"] == 768
    # The report's gallery shows the remade inputs: the very pixels the pixel run stored for those rows.
    split_dir, manifest = _split(both_modes["pixels"], "heldout")
    rows = report.gallery["rows"]
    assert rows and all(r["input"] is not None for r in rows)
    for r in rows:
        one = dataclasses.replace(manifest, shards={r["shard"]: manifest.shards[r["shard"]]})
        stored = shards.read_split(split_dir, one, ("input",))["input"][r["row"]].numpy()
        assert np.array_equal(decode_input(r["input"]).reshape(stored.shape), stored)


def test_an_input_that_remakes_differently_is_refused_naming_the_cause(both_modes, tmp_path, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(both_modes["recipe"].out, out)
    split_dir = f"{out}/shards/train"
    manifest = shards.require_manifest(split_dir)
    render = image_recipes.render

    def drifted(recipes, seeds):  # what a changed library would do: one pixel off by one
        made = render(recipes, seeds)
        made.reshape(len(made), -1)[0, 0] ^= 1
        return made

    monkeypatch.setattr(image_recipes, "render", drifted)
    with pytest.raises(UserError, match="differ from the inputs the teacher labeled.*the libraries are the recorded"):
        shards.read_split(split_dir, manifest)
    manifest.recipe["libraries"]["torch"] = "1.0.0"
    with pytest.raises(UserError, match=r"changed since labeling \(torch 1.0.0 then, .* now\); install the recorded"):
        next(iter(shards.ShardStream(split_dir, manifest, 32)))


def test_damaged_seed_images_stop_training_and_repair_writes_them_again(both_modes, tmp_path):
    from pipeline.label.stage import run_label_stage
    from pipeline.shards.verify import verify_run
    from pipeline.train.stage import run_train_stage

    cfg = dataclasses.replace(both_modes["recipe"], out=str(tmp_path / "run"))
    shutil.copytree(both_modes["recipe"].out, cfg.out)
    seed_file = f"{cfg.out}/shards/train/{SEED_FILE}"
    intact = open(seed_file, "rb").read()
    with open(seed_file, "r+b") as f:
        f.seek(len(intact) - 1)
        f.write(bytes([intact[-1] ^ 1]))
    assert any(SEED_FILE in p for p in verify_run(cfg.out).problems)
    with pytest.raises(UserError, match=f"{SEED_FILE} does not match.*label --repair"):
        run_train_stage(cfg)
    run_label_stage(dataclasses.replace(cfg, label=dataclasses.replace(cfg.label, repair=True)))
    assert open(seed_file, "rb").read() == intact
    assert verify_run(cfg.out).ok


def test_a_teacher_card_with_a_bad_preprocess_is_refused():
    from teachers import TeacherCard

    base = {"kind": "torch", "input_shape": [1, 8, 8], "classes": ["a"]}
    assert TeacherCard.from_dict({**base, "preprocess": {"mean": [0.5], "std": [0.2]}}).preprocess == {
        "mean": [0.5], "std": [0.2]}
    for bad in ({"mean": [0.5]}, {"mean": [0.5], "std": [0.0]}, {"mean": "imagenet", "std": [1]}):
        with pytest.raises(ValueError, match="preprocess"):
            TeacherCard.from_dict({**base, "preprocess": bad})


def test_an_onnx_teacher_is_called_behind_its_normalisation(tmp_path):
    """A model exported for normalised inputs (here: it returns its input's channel means) is distilled
    from [0, 1] pixels once teacher.mean / teacher.std say its normalisation."""
    from pipeline.teach.load import load_teacher
    from pipeline.teach.stage import run_teacher_stage
    from pipeline.run.rundir import RunPaths

    class ChannelMeans(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    data = tmp_path / "seeds.npz"
    np.savez(data, images=np.random.default_rng(0).integers(0, 256, (6, 3, 8, 8), dtype=np.uint8))
    model = tmp_path / "means.onnx"
    torch.onnx.export(ChannelMeans(), (torch.rand(2, 3, 8, 8),), str(model), input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}}, dynamo=False)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.5]
    cfg = tiny_config(tmp_path / "run", teacher={"checkpoint": str(model), "dataset": str(data), "mean": mean, "std": std})
    card = run_teacher_stage(cfg).card
    assert card.preprocess == {"mean": mean, "std": std}
    teacher, _ = load_teacher(RunPaths(cfg.out))
    x = np.random.default_rng(1).random((4, 3, 8, 8), dtype=np.float32)
    expected = (x.mean(axis=(2, 3)) - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(teacher(x), expected, rtol=1e-5, atol=1e-6)
    bad = tiny_config(tmp_path / "bad", teacher={"checkpoint": str(model), "dataset": str(data), "mean": [0.1, 0.2],
                                                 "std": [1.0, 1.0]})
    with pytest.raises(UserError, match="2 mean values for inputs of 3 channel"):
        run_teacher_stage(bad)


def test_image_files_are_fitted_without_stretching(tmp_path):
    from PIL import Image

    from pipeline.inputs.image_files import decode_images

    # 40 x 20 (W x H): a black left quarter, white in the middle half, black right quarter.
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, 10:30] = 255
    blobs = []
    for fmt, array in (("PNG", wide), ("JPEG", wide), ("PNG", wide[:, :, 0])):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format=fmt, quality=95)
        blobs.append(buffer.getvalue())
    out = decode_images(blobs, ["a.png", "b.jpg", "c.png"], [10, 10])
    assert out.shape == (3, 3, 10, 10)  # RGB: the mode of most files; the grey one converted
    # Fitted: the 20-high image becomes 10 high and 20 wide, and its centre 10 columns are kept: the
    # white middle. Stretched, its sides would be black.
    assert out[0].min() > 200 and out[2].min() > 200 and out[1].min() > 180
    with pytest.raises(ValueError, match="set teacher.image_size"):
        decode_images([blobs[0], _png(8, 8)], ["a.png", "d.png"], None)
    with pytest.raises(ValueError, match="broken.png is not a readable image"):
        decode_images([b"not an image"], ["broken.png"], [8, 8])


def _png(height: int, width: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_active_round_over_recipe_shards_adds_pixel_shards_and_trains_on_both(tmp_path):
    """Round 0's generated inputs are kept as recipes; a round's proposals (warps of labeled rows,
    least-sure draws) are kept as pixels, and training reads the mixed split."""
    from pipeline.adapt.loop import run_adapt
    from pipeline.label.stage import run_label_stage
    from pipeline.teach.stage import run_teacher_stage

    shared_ray()
    cfg = tiny_config(tmp_path / "out", data={"store_inputs": "recipe"}, adapt={"rounds": 1, "least_sure_share": 0.5})
    run_teacher_stage(cfg)
    run_label_stage(cfg)
    result = run_adapt(cfg)
    split_dir, manifest = _split(cfg)
    kept = {r.round: set(shards.open_shard(split_dir, r).schema_arrow.names) for r in manifest.records()}
    assert {"recipe", "input_hash"} <= kept[0] and "input" not in kept[0]
    assert "input" in kept[1] and "recipe" not in kept[1]
    rows = shards.read_split(split_dir, manifest, ("input", "sample_id"))
    assert rows["input"].shape[0] == manifest.rows == len(set(rows["sample_id"].tolist()))
    assert [r["round"] for r in result.rounds] == [0, 1] and result.rounds[-1]["labels"] == manifest.rows


def test_a_sweep_trial_on_ray_trains_the_same_student_from_recipes_as_from_pixels(both_modes, tmp_path):
    from pipeline.config import SweepConfig
    from pipeline.sweep.stage import run_sweep

    weights = {}
    for mode, labeled in both_modes.items():
        cfg = dataclasses.replace(labeled, out=str(tmp_path / mode), sweep=SweepConfig(widths=[8], target_agreement=0.0))
        cfg.eval = dataclasses.replace(cfg.eval, latency_seconds=0.01)
        shutil.copytree(labeled.out, cfg.out)
        (trial,) = run_sweep(cfg)["trials"]
        assert trial["trained"] and 0 <= trial["agreement"]["heldout"] <= 1
        weights[mode] = load_file(f"{cfg.out}/{trial['dir']}/student.safetensors")
    assert weights["pixels"].keys() == weights["recipe"].keys()
    assert all(torch.equal(weights["pixels"][k], weights["recipe"][k]) for k in weights["pixels"])
