"""Images at real size: shards of pixels against shards of recipes (data.store_inputs), 224 x 224 RGB.

    python bench/image_scale.py [--out DIR] [--rows 1024] [--rounds 3]

The bench makes a folder of real-size photographs (random crops, 300 to 427 pixels high, of the two
photographs scikit-learn ships, as JPEG and PNG files), a ResNet-18 teacher (torchvision's, random
weights, 1,000 classes, ImageNet's normalisation declared as teacher.mean / teacher.std, so it is
called as an ImageNet model is), and labels the same run twice, top-5 targets: once storing pixels,
once with data.store_inputs auto (which chooses recipes here). It prints
  - bytes per row of each mode's training shards;
  - labeling rate (label stage rows per second) against the teacher's own forward pass on the same
    inputs and batch size, in one process on all cores;
  - whether both modes' training batches are identical (every batch of an epoch, streamed through a
    loader worker), and whether the train stage gives both the same student weights;
  - the training input rate: the same student (the cnn of pipeline/configs/cnn-student.yaml), loss
    and optimizer, fed (a) by a plain loop over the inputs made in memory beforehand and (b) by the
    pipeline's stream of the recipe shards, remade in one loader worker process; rounds alternate
    (a b, b a, ...) and the ratio is the median of the rounds' b/a.
Its last lines are `bytes_share X`, `identical_batches true|false` and `input_rate_ratio X`.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pipeline import shards  # noqa: E402
from pipeline.config import (  # noqa: E402
    Config, DataConfig, EvalConfig, LabelConfig, StudentConfig, TeacherConfig, TrainConfig,
)
from pipeline.kinds import check_kinds  # noqa: E402
from pipeline.run import rundir  # noqa: E402

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def make_photos(folder: str, count: int, seed: int = 0) -> None:
    """`count` real-size photographs: random crops of scikit-learn's sample photographs, every third a PNG."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    os.makedirs(folder, exist_ok=True)
    if len(glob.glob(os.path.join(folder, "*"))) >= count:
        return
    photos = load_sample_images().images  # two 427 x 640 RGB photographs
    rng = np.random.default_rng(seed)
    for i in range(count):
        photo = photos[i % len(photos)]
        height = int(rng.integers(300, 428))
        width = int(min(640, round(height * rng.uniform(0.75, 1.5))))
        top, left = int(rng.integers(0, 428 - height)), int(rng.integers(0, 641 - width))
        crop = photo[top:top + height, left:left + width]
        crop = crop[:, ::-1] if rng.random() < 0.5 else crop
        image = Image.fromarray(np.ascontiguousarray(crop))
        if i % 3 == 2:
            image.save(os.path.join(folder, f"photo-{i:03d}.png"))
        else:
            image.save(os.path.join(folder, f"photo-{i:03d}.jpg"), quality=90)


def make_teacher(path: str) -> None:
    import torchvision
    from safetensors.torch import save_file

    if os.path.exists(path):
        return
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=1000)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)


def run_config(out: str, photos: str, teacher: str, rows: int, store: str) -> Config:
    per_shard = 256
    return check_kinds(Config(
        out=out,
        teacher=TeacherConfig(arch="torchvision.models:resnet18", kwargs={"num_classes": 1000}, checkpoint=teacher,
                              dataset=photos, image_size=[224, 224], mean=IMAGENET_MEAN, std=IMAGENET_STD),
        data=DataConfig(shards=max(1, rows // per_shard), samples_per_shard=per_shard, heldout_shards=1,
                        row_group_size=128, store_inputs=store),
        label=LabelConfig(batch_size=64, top_k=5),
        student=StudentConfig(arch="cnn", width=32, depth=3),
        train=TrainConfig(max_epochs=1, batch_size=32, lr=1e-3, loader_workers=1, preflight=False,
                          memory_budget_mb=1, val_every_epochs=1000),
        eval=EvalConfig(latency=False),
    ))


def label(cfg: Config) -> shards.Manifest:
    from pipeline.label.stage import run_label_stage
    from pipeline.teach.stage import run_teacher_stage

    run_teacher_stage(cfg)
    run_label_stage(cfg)
    return shards.require_manifest(rundir.RunPaths(cfg.out).split("train"))


def teacher_rate(cfg: Config, inputs: torch.Tensor) -> float:
    """Rows per second of the teacher's own forward pass (as labeling calls it) on stored inputs."""
    from pipeline.inputs.space import numpy_decoder
    from pipeline.teach.load import load_teacher

    teacher, card = load_teacher(rundir.RunPaths(cfg.out))
    decode = numpy_decoder("images", card.input_shape)
    b = cfg.label.batch_size
    teacher(decode(inputs[:b].numpy()))  # warm-up
    start = time.perf_counter()
    for i in range(0, len(inputs), b):
        teacher(decode(inputs[i:i + b].numpy()))
    return len(inputs) / (time.perf_counter() - start)


def stream_batches(cfg: Config, manifest: shards.Manifest, workers: int):
    stream = shards.ShardStream(rundir.RunPaths(cfg.out).split("train"), manifest, cfg.train.batch_size,
                                seed=cfg.train.seed)
    return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)


def same_batches(pixels: Config, recipe: Config, pm: shards.Manifest, rm: shards.Manifest) -> bool:
    count = 0
    for a, b in zip(stream_batches(pixels, pm, 1), stream_batches(recipe, rm, 1), strict=True):
        if a.keys() != b.keys() or not all(torch.equal(a[k], b[k]) for k in a):
            return False
        count += 1
    return count > 0


def trained_weights(cfg: Config) -> dict:
    from safetensors.torch import load_file

    from pipeline.train.stage import run_train_stage

    run_train_stage(cfg)
    return load_file(glob.glob(os.path.join(cfg.out, "student", "*.safetensors"))[0])


def timed_steps(cfg: Config, manifest: shards.Manifest, batches, steps: int) -> float:
    """Rows per second of `steps` optimizer steps of the student on `batches` (an iterator)."""
    from pipeline.train.trainer import build_module
    from students.module import make_optimizer

    torch.manual_seed(0)
    module = build_module(cfg, manifest, steps).train()
    optimizer = make_optimizer(module.student.parameters(), cfg.train.lr)
    start = time.perf_counter()
    done = 0
    for _, batch in zip(range(steps), batches):
        loss, _ = module.loss_and_agreement(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done += len(batch["input"])
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="directory for the photographs, the teacher and both runs (default: temporary)")
    parser.add_argument("--photos", type=int, default=40, help="photographs in the seed folder")
    parser.add_argument("--rows", type=int, default=1024, help="training rows (256 a shard)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=16, help="optimizer steps per round of the input-rate test")
    args = parser.parse_args()
    os.environ.setdefault("RAY_ADDRESS", "")  # labeling: the embedded local Ray

    root = args.out or tempfile.mkdtemp(prefix="image-scale-")
    photos, teacher = os.path.join(root, "photos"), os.path.join(root, "resnet18.safetensors")
    make_photos(photos, args.photos)
    make_teacher(teacher)
    print(f"bench: {root}; {args.photos} photographs, ResNet-18 teacher (random weights), {args.rows} training rows",
          flush=True)

    runs, manifests, seconds = {}, {}, {}
    for mode, store in (("pixels", "pixels"), ("recipe", "auto")):
        runs[mode] = run_config(os.path.join(root, mode), photos, teacher, args.rows, store)
        began = time.perf_counter()
        manifests[mode] = label(runs[mode])
        seconds[mode] = time.perf_counter() - began
    if manifests["recipe"].recipe is None:
        raise SystemExit("data.store_inputs auto did not choose recipes for 224 x 224 inputs")

    per_row = {m: sum(r.bytes for r in manifests[m].records()) / manifests[m].rows for m in runs}
    print(f"bytes per row: pixels {per_row['pixels']:,.0f}, recipes {per_row['recipe']:,.0f} "
          f"(the seed images, {manifests['recipe'].recipe['bytes']:,} bytes, once per split)")

    pixel_dir = rundir.RunPaths(runs["pixels"].out).split("train")
    made = shards.read_split(pixel_dir, manifests["pixels"])  # the inputs made in memory beforehand
    ceiling = teacher_rate(runs["pixels"], made["input"][:256])
    for mode in runs:
        rate = manifests[mode].rows / manifests[mode].label_seconds
        print(f"labeling {mode}: {rate:.1f} rows/s, {rate / ceiling:.2f} of the teacher's own forward pass "
              f"({ceiling:.1f} rows/s at batch {runs[mode].label.batch_size})")

    identical = same_batches(runs["pixels"], runs["recipe"], manifests["pixels"], manifests["recipe"])
    weights = {m: trained_weights(runs[m]) for m in runs}
    same_weights = all(torch.equal(weights["pixels"][k], weights["recipe"][k]) for k in weights["pixels"])
    print(f"training batches identical: {identical}; train stage student weights identical: {same_weights}")

    cfg, manifest = runs["recipe"], manifests["recipe"]
    steps = min(args.steps, manifest.rows // cfg.train.batch_size)
    b = cfg.train.batch_size

    def in_memory():
        order = torch.randperm(len(made["input"]), generator=torch.Generator().manual_seed(0))
        for i in range(0, len(order) - b + 1, b):
            yield {k: v[order[i:i + b]] for k, v in made.items()}

    ratios = []
    for r in range(args.rounds):
        got = {}
        for kind in (("plain", "recipe") if r % 2 == 0 else ("recipe", "plain")):
            batches = in_memory() if kind == "plain" else iter(stream_batches(cfg, manifest, cfg.train.loader_workers))
            got[kind] = timed_steps(cfg, manifest, batches, steps)
        ratios.append(got["recipe"] / got["plain"])
        print(f"round {r + 1}: (a) plain loop {got['plain']:.1f} rows/s   (b) recipes remade in "
              f"{cfg.train.loader_workers} loader worker {got['recipe']:.1f} rows/s   ratio {ratios[-1]:.3f}", flush=True)
    print(f"student {cfg.student.arch} w{cfg.student.width} d{cfg.student.depth}, batch {b}, {steps} steps a round, "
          f"torch threads {torch.get_num_threads()}, ratios {min(ratios):.3f}..{max(ratios):.3f}")
    print(f"bytes_share {per_row['recipe'] / per_row['pixels']:.5f}")
    print(f"identical_batches {'true' if identical and same_weights else 'false'}")
    print(f"input_rate_ratio {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
