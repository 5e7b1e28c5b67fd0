"""The typed configuration of a run.

Every knob lives in one of these dataclasses. The defaults are the embedded demo (a CNN teacher on
scikit-learn's bundled digits, an MLP student); a YAML file (`--config`) and command-line overrides
(`--train.max_epochs 5`) change values but never add keys: jsonargparse rejects unknown keys.

Fields marked `execution_only` say *how* to run (where, on how many devices), not *what* to compute;
they are left out of the run's fingerprint, so the same output directory can be finished on another
machine or cluster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from pipeline.errors import ConfigError

EXECUTION_ONLY = {"execution_only": True}


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


TEACHER_KINDS = ("auto", "torch", "export", "onnx", "callable")


@dataclass
class TeacherConfig:
    """The teacher: trained here on labeled seed data, or the user's own, imported as is.

    Kinds (`kind`, "auto" picks by checkpoint suffix): torch (a registry name or a factory by
    import path, weights from `checkpoint`, or trained here), export (a torch.export .pt2 program),
    onnx (an .onnx model), callable (a Python callable by import path on numpy batches)."""

    kind: str = "auto"
    """auto, torch, export, onnx or callable. auto: export for a .pt2 checkpoint, onnx for .onnx,
    torch otherwise; a callable must be asked for."""
    arch: str = "cnn"
    """A built-in architecture (cnn, resnet18) or an import path 'package.module:factory' to your own
    (torch kind), or 'package.module:function_or_class' (callable kind)."""
    kwargs: dict = field(default_factory=dict)
    """Keyword arguments of the factory or callable, e.g. '{"dim": 64}'. Part of the teacher's identity."""
    width: int = 32
    """Channels of the first block of a built-in architecture; later blocks double it (ignored by
    your own factories: give them kwargs)."""
    dataset: str = "digits"
    """Seed data: digits (bundled with scikit-learn, offline), mnist / fashion_mnist / cifar10 read
    from data_root (never downloaded), an image folder (root/<class>/*.png), or a .npz / .parquet file."""
    data_root: Optional[str] = None
    """Directory holding torchvision datasets on disk; unused otherwise."""
    test_data: Optional[str] = None
    """Your own real test split (a folder or file like `dataset`); None: hold out test_fraction."""
    image_size: Optional[list[int]] = None
    """[H, W] the teacher takes: images of a folder or encoded-image file are decoded and resized to it
    (the shorter side to fit, then a centre crop: no stretching); None: they must share one size."""
    # Left out of a recorded config while unset: runs recorded before these fields existed stay the same run.
    mean: Optional[list[float]] = field(default=None, metadata={"omit_when_default": True})
    """The teacher's own input normalisation, applied as part of the teacher on [0, 1] pixels: (x - mean)
    / std per channel (one value, or one per channel), e.g. ImageNet's [0.485, 0.456, 0.406] with std
    [0.229, 0.224, 0.225] for a torchvision model. None: from the card beside the checkpoint, or none.
    The student learns on the [0, 1] pixels and needs none."""
    std: Optional[list[float]] = field(default=None, metadata={"omit_when_default": True})
    """See mean; both or neither."""
    checkpoint: Optional[str] = None
    """Your trained teacher: .safetensors (or a .pt state dict, loaded weights_only) with an optional
    .json card beside it, a torch.export .pt2, or an .onnx model. When set the teacher is imported,
    not trained."""
    epochs: int = 30
    """Passes over the seed training split when training the teacher."""
    batch_size: int = 128
    lr: float = 3e-3
    """Adam learning rate for the teacher."""
    mixup_alpha: float = 1.0
    """Beta(alpha, alpha) mixup while training the teacher (0: off). A teacher that is smooth between
    classes is one a small student can copy closely; it also tends to be the more accurate one."""
    test_fraction: float = 0.25
    """Share of seed data without a predefined test split that is set aside as the real test split,
    on which nothing trains."""
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, f"teacher.epochs must be at least 1, got {self.epochs}.")
        _check(self.width >= 1, f"teacher.width must be at least 1, got {self.width}.")
        _check(self.batch_size >= 1, f"teacher.batch_size must be at least 1, got {self.batch_size}.")
        _check(self.lr > 0, f"teacher.lr must be positive, got {self.lr}.")
        _check(self.mixup_alpha >= 0, f"teacher.mixup_alpha must not be negative, got {self.mixup_alpha}.")
        _check(0 < self.test_fraction < 1, f"teacher.test_fraction must be in (0, 1), got {self.test_fraction}.")
        _check(self.kind in TEACHER_KINDS, f"teacher.kind must be one of {', '.join(TEACHER_KINDS)}, got {self.kind!r}.")
        _check(isinstance(self.kwargs, dict), f"teacher.kwargs must be a mapping, got {self.kwargs!r}.")
        _check(self.image_size is None or (len(self.image_size) == 2 and min(self.image_size) >= 1),
               f"teacher.image_size must be [H, W] of positive sizes, got {self.image_size}.")
        _check((self.mean is None) == (self.std is None), "teacher.mean and teacher.std go together: set both or neither.")
        _check(self.std is None or (len(self.std) >= 1 and all(v > 0 for v in self.std)),
               f"teacher.std must be positive values (one, or one per channel), got {self.std}.")
        _check(self.mean is None or len(self.mean) >= 1, "teacher.mean must hold one value, or one per channel.")
        _check(self.kind != "callable" or ":" in self.arch,
               f"teacher.kind callable needs teacher.arch as an import path 'package.module:function', got {self.arch!r}.")


@dataclass
class ParameterConfig:
    """One parameter of a vector input space: its name and range."""

    name: str
    low: float
    high: float
    log: bool = False
    """Sample (and scale for the student) on a log scale: for ranges over orders of magnitude."""


@dataclass
class ChannelConfig:
    """One channel of a field input space: a Gaussian random field (pipeline/inputs/random_fields.py),
    or, with data.fields.base, the perturbation added to the user's own arrays."""

    length_scale: float = 0.1
    """Correlation length, as a fraction of the domain's side (the domain is the unit interval or square)."""
    amplitude: float = 1.0
    """Pointwise standard deviation of the field (of the perturbation, with data.fields.base)."""
    mean: float = 0.0
    """Pointwise mean (ignored with data.fields.base: the user's arrays are the centre)."""
    periodic: bool = True
    """Periodic fields wrap around the domain's edges (a periodic PDE's initial condition)."""
    smoothness: Optional[float] = 2.5
    """Matérn smoothness nu (1.5, 2.5, ...); null: the squared-exponential kernel (infinitely smooth)."""
    random_mean: bool = True
    """false: leave out the constant Fourier mode, so a periodic field averages exactly `mean` over the
    domain (as the FNO and PDEBench generators draw initial conditions); `amplitude` is then the spread
    about that mean."""


@dataclass
class FieldsConfig:
    """The field input space: arrays [C, *grid] on a 1-D or 2-D grid, fed to a solver as a whole."""

    grid: list[int] = field(default_factory=list)
    """Points per dimension: [N] for 1-D fields, [H, W] for 2-D ones."""
    channels: list[ChannelConfig] = field(default_factory=lambda: [ChannelConfig()])
    """One entry per input channel, e.g. [{length_scale: 0.1, amplitude: 1.0, periodic: true}]."""
    dtype: Literal["float32", "float16"] = "float32"
    """How shards store the inputs. float16 halves their bytes; the teacher is called on the stored
    (rounded) values, so student and teacher still see exactly the same inputs."""
    base: Optional[str] = None
    """Your own arrays (.npy, .npz, .parquet; .h5 or .zarr where h5py or zarr is installed), shaped
    [M, C, *grid] or [M, *grid]: each generated input is one of them plus a random field drawn with
    `channels` (one per channel of the arrays)."""
    base_key: Optional[str] = None
    """The array's name inside an .npz, .h5 or .zarr file, or the column of a .parquet file."""


@dataclass
class DataConfig:
    """What the generator makes. Images (the default): augmented views of the seed training images
    plus synthetic inputs. Vectors: points of the box of `parameters` (a simulator's inputs).

    Each shard's inputs are a pure function of (these fields, seed, shard index)."""

    space: str = "images"
    """images, vectors (points of the box `parameters`) or fields (arrays on a grid, data.fields): an
    input space registered in pipeline.inputs."""
    parameters: list[ParameterConfig] = field(default_factory=list)
    """Vectors: the named parameters, in the order the teacher takes them, e.g.
    [{name: nu, low: 0.05, high: 0.3, log: true}, ...]."""
    sampler: str = "sobol"
    """Vectors: sobol (scrambled, the default), lhs (Latin hypercube) or grid (every point of a grid of
    grid_points per parameter, for spaces small enough to enumerate). Held-out shards are always Sobol
    points from heldout_seed, so they fall between grid points."""
    grid_points: int = 0
    """Vectors with sampler grid: values per parameter (the grid has grid_points ** D points)."""
    fields: FieldsConfig = field(default_factory=FieldsConfig, metadata={"omit_when_default": True})
    """Fields: the grid, the random fields per channel, and optionally your own arrays to perturb."""

    shards: int = 16
    """Training shards (one Ray task each)."""
    samples_per_shard: int = 4096
    heldout_shards: int = 2
    """Held-out shards, generated from heldout_seed; nothing trains on them."""
    seed: int = 1
    heldout_seed: int = 2
    row_group_size: int = 1024
    """Rows per Parquet row group: the unit that DDP ranks and loader workers split between them."""
    store_inputs: Literal["auto", "pixels", "recipe"] = field(default="auto", metadata=EXECUTION_ONLY)
    """How shards keep generated images. pixels: the input itself (C*H*W bytes a row). recipe: what
    remakes it (which seed images, the augmentation's parameters and seeds: 160 bytes a row) and a
    hash of the input the teacher saw; training remakes inputs in its loader workers and refuses
    any whose hash differs. auto: recipe once an input's bytes are at least RECIPE_RATIO (16) times
    its targets' (a 224x224 RGB image against 1,000 logits), pixels otherwise. Either way the
    inputs, the batches and the student are the same; only the bytes stored differ."""
    mixup_fraction: float = 0.15
    """Share of inputs that blend two augmented images."""
    mixup_alpha: float = 0.4
    """Blend weights are Beta(alpha, alpha): below 1 most blends lean to one image, fewer sit on the
    exact midpoint where the teacher's top class is a coin toss."""
    noise_fraction: float = 0.01
    """Share of inputs that are smooth random patterns (low-resolution noise, upsampled). Far from
    any real image the teacher's answer is close to a tie, so a large share mostly buys ambiguity."""
    rotation_deg: float = 10.0
    """Largest rotation, degrees, either way. The teacher trains under the same augmentation."""
    translate: float = 0.1
    """Largest shift, as a fraction of the image side."""
    scale_min: float = 0.9
    scale_max: float = 1.1
    shear_deg: float = 5.0
    pixel_noise: float = 0.02
    """Std of Gaussian pixel noise, as a fraction of full intensity."""

    def __post_init__(self) -> None:
        # Whether the options fit the space (parameters, sampler, grid) is the space's to check
        # (pipeline.kinds.check_kinds).
        for key in ("shards", "samples_per_shard", "row_group_size"):
            _check(getattr(self, key) >= 1, f"data.{key} must be at least 1, got {getattr(self, key)}.")
        _check(self.heldout_shards >= 0, f"data.heldout_shards must be at least 0, got {self.heldout_shards}.")
        _check(self.seed != self.heldout_seed, "data.seed and data.heldout_seed must differ, or held-out inputs repeat training ones.")
        for key in ("mixup_fraction", "noise_fraction"):
            _check(0 <= getattr(self, key) <= 1, f"data.{key} must be in [0, 1], got {getattr(self, key)}.")
        _check(self.mixup_alpha > 0, f"data.mixup_alpha must be positive, got {self.mixup_alpha}.")
        _check(self.mixup_fraction + self.noise_fraction <= 1, "data.mixup_fraction + data.noise_fraction must not exceed 1.")
        _check(0 < self.scale_min <= self.scale_max, f"data.scale_min must be positive and at most data.scale_max, got {self.scale_min} and {self.scale_max}.")
        _check(self.pixel_noise >= 0 and self.translate >= 0, "data.pixel_noise and data.translate must not be negative.")


@dataclass
class LabelConfig:
    """How the teacher labels generated inputs on Ray."""

    batch_size: int = 1024
    """Inputs per teacher forward pass."""
    actors: Optional[int] = field(default=None, metadata=EXECUTION_ONLY)
    """Teacher actors (each loads the teacher once). None: one per GPU, or one per label.cpus_per_actor CPUs."""
    num_gpus: Optional[float] = field(default=None, metadata=EXECUTION_ONLY)
    """GPUs per teacher actor. None: 1 when the cluster has GPUs, else 0."""
    max_retries: int = field(default=3, metadata=EXECUTION_ONLY)
    """Ray retries for a shard whose worker died."""
    top_k: Optional[int] = None
    """Store only the k largest logits per input (float16 values + class indices) instead of all of
    them: for teachers with many classes, where full logits dominate the bytes on disk. Training
    then learns the teacher's distribution renormalised over its top k (KL loss only)."""
    timeout_s: Optional[float] = None
    """Longest a teacher may take on one batch, seconds; a batch that takes longer has its rows
    rejected (counted, the first error reported) and labeling goes on. Set, each actor runs the
    teacher in a process of its own, killed and started again when a batch is stuck where no signal
    reaches it (in C or Fortran): such a batch costs timeout_s plus at most 1 s and a reload of the
    teacher. None: no limit, and the teacher runs in the actor."""
    cpus_per_actor: float = field(default=1.0, metadata=EXECUTION_ONLY)
    """CPUs each teacher actor asks Ray for. On CPU nodes there is one actor per this many cores, each
    running its batches on that many threads: raise it for a teacher too large to hold once per core,
    or for a simulator that runs several threads or processes per call."""
    bf16_on_gpu: bool = True
    """On a GPU, run the teacher under bf16 autocast (about twice the throughput of fp32; logits
    are stored as float16 either way). Turn off for a teacher that is unstable in bf16."""
    repair: bool = field(default=False, metadata=EXECUTION_ONLY)
    """Relabel every recorded shard that is missing or no longer has the size and sha256 its manifest
    records (`label --repair`); intact shards are left as they are. Without it such a shard stops
    every stage: bytes that change after commit mean a disk, a copy or a hand went wrong."""

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, f"label.batch_size must be at least 1, got {self.batch_size}.")
        _check(self.actors is None or self.actors >= 1, f"label.actors must be at least 1, got {self.actors}.")
        _check(self.top_k is None or self.top_k >= 1, f"label.top_k must be at least 1, got {self.top_k}.")


@dataclass
class StudentConfig:
    """The student architecture. Every student takes a width and a depth, so sizes can be swept."""

    arch: Optional[str] = None
    """A built-in architecture (mlp, cnn; fno, unet for fields) or an import path
    'package.module:factory' to your own. A factory is called with input_shape=(C, H, W),
    num_outputs=K and kwargs; built-ins also get width and depth, and students of fields get
    output_shape=[C', *grid]. None: the input space's choice (mlp; fno for fields)."""
    width: Optional[int] = None
    """Hidden units (mlp) or channels (cnn) of a built-in architecture. None: the task's default
    (classification 112; regression chosen from the parameters and labels, and said in the output)."""
    depth: Optional[int] = None
    """Hidden layers (mlp) or conv blocks (cnn) of a built-in. None: the task's default (classification
    3: for a fixed budget of parameters depth fits the teacher's function better than width, 33.8k
    parameters on digits, 10.7x fewer than the teacher; regression 4)."""
    activation: Optional[Literal["relu", "silu", "gelu", "tanh"]] = field(default=None,
                                                                           metadata={"omit_when_default": True})
    """The hidden layers' nonlinearity of a built-in mlp or cnn. None: the task's default (relu for
    classification; silu for regression, whose smooth targets a piecewise-linear fit copies with
    several times the error at the same size)."""
    kwargs: dict = field(default_factory=dict)
    """More keyword arguments of the factory, e.g. '{"hidden": 64}'."""

    def __post_init__(self) -> None:
        _check((self.width is None or self.width >= 1) and (self.depth is None or self.depth >= 1),
               f"student.width and student.depth must be at least 1, got {self.width} and {self.depth}.")
        _check(isinstance(self.kwargs, dict), f"student.kwargs must be a mapping, got {self.kwargs!r}.")


@dataclass
class TrainConfig:
    """Student training. Deliberate overfitting: no dropout and no weight decay exist to turn on;
    training stops when training agreement stops rising, or at max_epochs."""

    max_epochs: Optional[int] = None
    """None: the task's default (classification 60; regression chosen from the number of labels so
    that training takes a similar number of optimizer steps, and said in the output)."""
    batch_size: Optional[int] = None
    """Per device. None: the task's default (classification 512, regression 256)."""
    lr: Optional[float] = None
    """Peak learning rate of the schedule. None: the task's default (classification 1e-2, regression 2e-3)."""
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    """Learning rate over the run, stepped every batch. onecycle: warm up to lr over the first 15%,
    then anneal to almost zero; cosine: from lr down to zero; constant: lr throughout."""
    temperature: float = 1.0
    """Softmax temperature of the KL loss; the loss is scaled by T^2 so gradients keep their size.
    Above 1 the student spends capacity on the teacher's small logits; at 1 the loss weighs classes
    as top-1 agreement does."""
    loss: Literal["auto", "kl", "mse", "relative"] = "auto"
    """auto: kl for classification, mse for regression. kl: KL(teacher || student) at the temperature;
    mse: squared error (on raw logits; for regression on standardised targets); relative (regression):
    squared error relative to the squared norm of the teacher's output."""
    margin_weight: Optional[float] = None
    """Classification: weight of a hinge added to the loss that asks the student to rank the
    teacher's top class first, by at least a tenth of the teacher's own margin over its runner-up
    (students.losses.top1_margin_hinge). Zero for a student that matches the teacher, so it does
    not pull away from the teacher's function; without it, KL barely notices a near-tie put in the
    wrong order, and training agreement on near-ties is left to chance. Memorising near-ties pays
    where they are densely covered (the boundary rows of active rounds) and costs held-out
    agreement where they are sparse (uniform data). None: 1.0 with adapt.rounds, else 0. Unused
    for regression."""
    patience: Optional[int] = None
    """None: the task's default (classification 10, regression 30). Epochs without a rise of at least min_delta in training agreement (regression: without any
    fall of the training loss) before training stops. Counted only once the learning rate is below
    a tenth of its peak (from the start under a constant schedule): at the peak rate agreement stalls
    and climbs again as the rate anneals, and a student stopped there never annealed."""
    min_delta: float = 0.0005
    seed: int = 0
    devices: int = field(default=1, metadata=EXECUTION_ONLY)
    """Processes (DDP ranks) on this machine: CPU processes with gloo, or GPUs with nccl."""
    accelerator: str = field(default="auto", metadata=EXECUTION_ONLY)
    """auto, cpu or gpu."""
    loader_workers: Optional[int] = field(default=None, metadata=EXECUTION_ONLY)
    """DataLoader worker processes per rank that read shards. None: 0 on a machine with 4 cores or
    fewer (a worker then only competes with training for a core), else up to 4; 0 on Ray Train
    workers, which ask Ray for one CPU each plus one per loader process."""
    num_workers: int = field(default=1, metadata=EXECUTION_ONLY)
    """Ray Train workers, one process and one device each, anywhere on the Ray cluster (--address or
    RAY_ADDRESS; an embedded local Ray without either). 1: train in this process (devices as above)."""
    preflight: bool = field(default=True, metadata=EXECUTION_ONLY)
    """Before training, check that the student can memorise a few examples of the first batch (loss
    down to 5% of its start within preflight_steps); stop with an error if it cannot."""
    preflight_steps: int = field(default=500, metadata=EXECUTION_ONLY)
    """Optimizer steps the preflight may take (it stops as soon as the loss is low enough)."""
    memory_budget_mb: Optional[int] = field(default=None, metadata=EXECUTION_ONLY)
    """MiB of training and held-out data this machine may hold in memory, for all its ranks
    together. Splits that fit are read once into tensors (onto the GPU when training there);
    larger ones stream from the shards with flat memory. Same batches either way. None: a quarter
    of the machine's memory (its container's memory limit where that is lower). Each training
    process on the machine (DDP rank, Ray Train worker) gets an equal share."""
    val_every_epochs: int = field(default=5, metadata=EXECUTION_ONLY)
    """Epochs between passes over the held-out shards during training (and always after the
    last). Informative only: nothing stops or is chosen on it, and the eval stage measures the
    held-out split exactly."""
    checkpoint_every_steps: int = field(default=200, metadata=EXECUTION_ONLY)
    """Optimizer steps between checkpoints (DIR/student/checkpoints/last.ckpt), so a killed run loses
    at most this many steps. 0: only at the end of each epoch."""
    resume: bool = field(default=False, metadata=EXECUTION_ONLY)
    """Continue the interrupted run from its last checkpoint (`train --resume`). Without it, a
    checkpoint left by an interrupted run is an error rather than silently discarded."""
    deterministic: bool = field(default=False, metadata=EXECUTION_ONLY)
    """Deterministic algorithms only (Lightning's deterministic=True): bit-identical reruns and
    resumes on the same hardware, at some cost in speed on GPU."""

    def __post_init__(self) -> None:
        for key in ("max_epochs", "batch_size", "patience", "devices", "num_workers", "preflight_steps",
                    "val_every_epochs"):
            value = getattr(self, key)
            _check(value is None or value >= 1, f"train.{key} must be at least 1, got {value}.")
        _check(self.lr is None or self.lr > 0, f"train.lr must be positive, got {self.lr}.")
        _check(self.temperature > 0, f"train.temperature must be positive, got {self.temperature}.")
        _check(self.margin_weight is None or self.margin_weight >= 0,
               f"train.margin_weight must be at least 0, got {self.margin_weight}.")
        _check(self.loader_workers is None or self.loader_workers >= 0,
               f"train.loader_workers must be at least 0, got {self.loader_workers}.")
        _check(self.accelerator in ("auto", "cpu", "gpu", "cuda"), f"train.accelerator must be auto, cpu or gpu, got {self.accelerator!r}.")
        _check(self.memory_budget_mb is None or self.memory_budget_mb >= 0,
               f"train.memory_budget_mb must be at least 0, got {self.memory_budget_mb}.")
        _check(self.checkpoint_every_steps >= 0,
               f"train.checkpoint_every_steps must be at least 0, got {self.checkpoint_every_steps}.")
        _check(self.num_workers == 1 or self.devices == 1,
               "train.devices must be 1 when train.num_workers is more than 1 "
               "(each Ray Train worker drives one device).")


@dataclass
class EvalConfig:
    """The eval stage. Every field says how to measure, not what the run computes, so a finished
    run can be evaluated again with other settings."""

    batch_size: int = field(default=4096, metadata=EXECUTION_ONLY)
    min_agreement: Optional[float] = field(default=None, metadata=EXECUTION_ONLY)
    """Promotion gate (classification): exit with code 3 if held-out top-1 agreement is below this."""
    max_rel_error: Optional[float] = field(default=None, metadata=EXECUTION_ONLY)
    """Promotion gate (regression): exit with code 3 if the held-out relative L2 error at
    rel_error_quantile is above this."""
    rel_error_quantile: Literal["median", "p95", "p99", "max"] = field(default="p95", metadata=EXECUTION_ONLY)
    """Which held-out relative-error figure the regression gate reads."""
    heatmap: Optional[list[str]] = field(default=None, metadata=EXECUTION_ONLY)
    """Regression: the two parameters (by name) the report's error heatmap spans. None: the first two."""
    workers: int = field(default=1, metadata=EXECUTION_ONLY)
    """Parallel evaluators of the shard splits. 1: this process alone (no Ray needed, as in the gate's
    pod). More: the shards are dealt whole to that many Ray tasks, whose metric states are merged."""
    calibration_bins: int = field(default=15, metadata=EXECUTION_ONLY)
    """Equal-width confidence bins of the calibration error and the reliability diagram."""
    latency: bool = field(default=True, metadata=EXECUTION_ONLY)
    """Measure teacher and student CPU latency at batch 1 and 256 (a few seconds)."""
    latency_threads: int = field(default=1, metadata=EXECUTION_ONLY)
    """Torch threads for latency measurement, fixed so figures compare across machines and runs."""
    latency_seconds: float = field(default=0.5, metadata=EXECUTION_ONLY)
    """Least time spent timing each model at each batch size, seconds; the median over the timed
    blocks is reported."""

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, f"eval.batch_size must be at least 1, got {self.batch_size}.")
        _check(self.min_agreement is None or 0 <= self.min_agreement <= 1, f"eval.min_agreement must be in [0, 1], got {self.min_agreement}.")
        _check(self.heatmap is None or len(self.heatmap) == 2, f"eval.heatmap must name two parameters, got {self.heatmap}.")
        _check(self.max_rel_error is None or self.max_rel_error >= 0, f"eval.max_rel_error must not be negative, got {self.max_rel_error}.")
        for key in ("workers", "calibration_bins", "latency_threads"):
            _check(getattr(self, key) >= 1, f"eval.{key} must be at least 1, got {getattr(self, key)}.")
        _check(self.latency_seconds > 0, f"eval.latency_seconds must be positive, got {self.latency_seconds}.")


@dataclass
class SweepConfig:
    """The capacity sweep (`python -m pipeline sweep`): students of several sizes trained on the run's
    shards with its train settings, to find the smallest one that copies the teacher well enough.
    Each trial lives in DIR/sweep/<arch>-w<width>-d<depth>/, so these fields say which trials to run,
    not what the run computes."""

    widths: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128, 256], metadata=EXECUTION_ONLY)
    """Student widths to train (hidden units of an MLP, channels of a CNN)."""
    depths: Optional[list[int]] = field(default=None, metadata=EXECUTION_ONLY)
    """Student depths to train, crossed with the widths. None: student.depth."""
    arch: Optional[str] = field(default=None, metadata=EXECUTION_ONLY)
    """Student architecture of the sweep. None: student.arch."""
    target_agreement: Optional[float] = field(default=None, metadata=EXECUTION_ONLY)
    """Held-out top-1 agreement the smallest student must reach. None: eval.min_agreement, else 0.99."""
    cpus_per_trial: int = field(default=1, metadata=EXECUTION_ONLY)
    """CPUs (and torch threads) per trial; Ray runs as many trials at once as the cluster's CPUs allow."""
    gpus_per_trial: float = field(default=0.0, metadata=EXECUTION_ONLY)
    """GPUs per trial (0: train on CPU)."""

    def __post_init__(self) -> None:
        _check(len(self.widths) >= 1 and all(w >= 1 for w in self.widths), f"sweep.widths must be a non-empty list of positive widths, got {self.widths}.")
        _check(self.depths is None or (len(self.depths) >= 1 and all(d >= 1 for d in self.depths)), f"sweep.depths must be a non-empty list of positive depths, got {self.depths}.")
        _check(self.target_agreement is None or 0 <= self.target_agreement <= 1, f"sweep.target_agreement must be in [0, 1], got {self.target_agreement}.")
        _check(self.cpus_per_trial >= 1, f"sweep.cpus_per_trial must be at least 1, got {self.cpus_per_trial}.")
        _check(self.gpus_per_trial >= 0, f"sweep.gpus_per_trial must not be negative, got {self.gpus_per_trial}.")




@dataclass
class AdaptConfig:
    """Active distillation (`--adapt.rounds 3`): the same label budget (data.shards), spent in rounds.
    Round 0 labels first_fraction of the training shards uniformly and trains a student; each later
    round scores every labeled training row with the current student, proposes inputs around the
    worst rows, labels them as that round's shards and trains again on all rounds. Held-out shards
    stay uniform, so held-out figures measure what users get (pipeline/adapt/)."""

    rounds: int = 0
    """Rounds after the uniform round 0 (0: off, every training shard uniform)."""
    first_fraction: float = 0.5
    """Share of the training shards labeled uniformly in round 0; the rest is dealt evenly to the
    later rounds. Half: round 0's student must be good enough that its mistakes point at the
    teacher's real boundaries, and uniform coverage stays the larger part of the data."""
    least_sure_share: float = 1.0
    """Image classification: share of a round's labels spent on generated inputs the current student
    is least sure of (smallest margin between its top two logits, out of `pool` times as many
    candidates); the rest go to warps and mixups around the worst training rows. Vectors and
    regression: every label goes around the worst rows (Sobol clouds)."""
    pool: int = 16
    """Least-sure candidates generated (and scored by the student, without the teacher) per label spent."""
    proposals_per_row: int = 8
    """Inputs proposed around each of the worst rows: a round of n rows starts from its n /
    proposals_per_row worst training rows (disagreements first, then per-row KL; regression:
    relative error)."""
    mixup_share: float = 0.25
    """Images: share of a round's proposals that blend a worst row with its nearest worst row of
    another teacher class (the boundary between them); the rest are small warps plus noise."""
    warp: float = 0.5
    """Images: size of the warps around a worst row, as a fraction of data's augmentation ranges
    (rotation, shift, scale, shear), in round 1; shrinks by `shrink` each later round."""
    spread: float = 0.05
    """Vectors: half-width of the Sobol cloud around a worst point, as a fraction of each side of
    the box, in round 1; shrinks by `shrink` each later round. Points are clipped to the box."""
    shrink: float = 0.5
    """Factor on the warp and the spread from one round to the next: later rounds look closer."""
    compare: Optional[str] = field(default=None, metadata=EXECUTION_ONLY)
    """Output directory of a uniform run of the same config (no adapt): its held-out figure at its
    labels is drawn beside the rounds' curve in the report."""
    round_epochs: Optional[int] = None
    """Training epochs of the students of rounds before the last, at most train.max_epochs; the last
    round's student trains train.max_epochs. None: 30 for classification, where a round's student
    only points at the boundaries by its margins, and train.max_epochs for regression, where the
    rows it gets most wrong are where to label and a half-trained student's worst rows are
    mostly its own unfinished fit."""

    def __post_init__(self) -> None:
        _check(self.rounds >= 0, f"adapt.rounds must be at least 0, got {self.rounds}.")
        _check(0 < self.first_fraction < 1, f"adapt.first_fraction must be in (0, 1), got {self.first_fraction}.")
        _check(0 <= self.least_sure_share <= 1,
               f"adapt.least_sure_share must be in [0, 1], got {self.least_sure_share}.")
        _check(self.pool >= 1, f"adapt.pool must be at least 1, got {self.pool}.")
        _check(self.proposals_per_row >= 1, f"adapt.proposals_per_row must be at least 1, got {self.proposals_per_row}.")
        _check(0 <= self.mixup_share <= 1, f"adapt.mixup_share must be in [0, 1], got {self.mixup_share}.")
        for key in ("warp", "spread", "shrink"):
            _check(getattr(self, key) > 0, f"adapt.{key} must be positive, got {getattr(self, key)}.")
        _check(self.round_epochs is None or self.round_epochs >= 1,
               f"adapt.round_epochs must be at least 1, got {self.round_epochs}.")

    def round_shards(self, shards: int) -> list[int]:
        """Training shards labeled in each round, round 0 first, adding up to `shards`."""
        if not self.rounds:
            return [shards]
        first = min(shards - self.rounds, max(1, round(shards * self.first_fraction)))
        base, extra = divmod(shards - first, self.rounds)
        return [first] + [base + (1 if r < extra else 0) for r in range(self.rounds)]


@dataclass
class TaskConfig:
    """What a target is and how closeness is measured."""

    kind: str = "classification"
    """classification: targets are a classifier's logits (float16), scored by agreement and KL.
    regression: targets are float32 vectors (a simulator's outputs), standardised per output for
    training and scored by relative error."""
    tolerance: float = 0.01
    """Regression: a sample agrees when its relative L2 error is at most this (the training
    `agreement` and the report's fraction within tolerance)."""
    target_transform: Literal["auto", "none", "log", "asinh"] = field(default="auto",
                                                                      metadata={"omit_when_default": True})
    """Regression: how targets are transformed before they are standardised for training. auto
    (the default) chooses from the training targets: log when they are >= 0 and the samples' scales
    span two decades or more, asinh (a signed log) when such targets cross zero, none otherwise;
    the choice is printed, kept with the student and explained in the report. The student still
    returns physical values, and errors are measured on them."""

    def __post_init__(self) -> None:
        _check(self.tolerance > 0, f"task.tolerance must be positive, got {self.tolerance}.")


TRACKERS = ("none", "mlflow", "tensorboard")


@dataclass
class TrackConfig:
    """Where a run's parameters, curves, report and student are also sent (pipeline/track/): an MLflow
    store or a TensorBoard directory, beside the run's own files, never instead of them. Every field
    says where to report, not what the run computes, so a finished run rerun with tracking added is
    the same run."""

    to: str = "none"
    """none; mlflow:URI (e.g. mlflow:sqlite:///mlflow.db, mlflow:http://host:5000) or mlflow alone (the
    store MLFLOW_TRACKING_URI names); tensorboard:DIR, or tensorboard alone (DIR/tensorboard in the
    run's directory). Needs the track extra (pip install 'distillery[track]')."""
    experiment: str = "distillery"
    """The MLflow experiment the run is logged in (created when missing; unused by TensorBoard)."""
    run_name: Optional[str] = None
    """The run's name in the tracker (MLflow's run name, TensorBoard's folder). None: the name of the
    output directory."""
    run_id: Optional[str] = None
    """The tracker's run to log into: an MLflow run id, or a folder under the TensorBoard directory.
    None: the output directory's own run, found by its tags (MLflow) or its record (TensorBoard), else
    started."""

    def __post_init__(self) -> None:
        kind, _, where = self.to.partition(":")
        _check(kind in TRACKERS and (where or ":" not in self.to) and not (kind == "none" and where),
               f"track.to must be none, mlflow, mlflow:URI, tensorboard or tensorboard:DIR, got {self.to!r}.")
        _check(bool(self.experiment.strip()), "track.experiment must not be empty.")


@dataclass
class Config:
    """A whole run. `out` holds every stage's output; each stage reads the one before from it."""

    out: str = field(default="runs/demo", metadata=EXECUTION_ONLY)
    """Output directory: a local path or a pyarrow filesystem URI (file://, s3://, gs://)."""
    code_dir: Optional[str] = field(default=None, metadata=EXECUTION_ONLY)
    """A directory of your own modules (teachers, students, simulators named by import path). It is
    put on sys.path here and shipped to every Ray worker as the job's working_dir; code already on
    PYTHONPATH (of every node) needs nothing."""
    address: Optional[str] = field(default=None, metadata=EXECUTION_ONLY)
    """Ray cluster to join ('auto', 'ray://host:10001', ...). None: RAY_ADDRESS, else an embedded local Ray."""
    task: TaskConfig = field(default_factory=TaskConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    data: DataConfig = field(default_factory=DataConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig, metadata={"omit_when_default": True})
    """Left out of the fingerprint while off (the default), so runs recorded before it existed still match."""
    sweep: SweepConfig = field(default_factory=SweepConfig, metadata=EXECUTION_ONLY)
    """Left out of the run's fingerprint whole: sweeping a finished run never makes it a different run."""
    track: TrackConfig = field(default_factory=TrackConfig, metadata=EXECUTION_ONLY)
    """Left out of the run's fingerprint whole: tracking says where a run is reported, not what it computes."""

    def __post_init__(self) -> None:
        # Options that depend on the task or the input space are checked by them (pipeline.kinds).
        _check(self.data.shards >= self.adapt.rounds + 1,
               f"adapt.rounds {self.adapt.rounds} needs at least {self.adapt.rounds + 1} training shards "
               f"(one a round), got data.shards {self.data.shards}.")

    @property
    def margin_weight(self) -> float:
        """train.margin_weight with None resolved: on for active rounds, off for uniform data."""
        if self.train.margin_weight is not None:
            return self.train.margin_weight
        return 1.0 if self.adapt.rounds else 0.0


def result_fields(obj: Any) -> dict:
    """The fields that decide what a run computes (everything not execution_only), as plain data."""
    out = {}
    for f in dataclasses.fields(obj):
        if f.metadata.get("execution_only"):
            continue
        value = getattr(obj, f.name)
        if f.metadata.get("omit_when_default") and value == (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default):
            continue
        if isinstance(value, list):
            value = [result_fields(v) if dataclasses.is_dataclass(v) else v for v in value]
        out[f.name] = result_fields(value) if dataclasses.is_dataclass(value) else value
    return out


def fingerprint(data: dict) -> str:
    """A short stable hash of plain config data (sorted JSON)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def differing_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    keys = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += differing_keys(va, vb, f"{prefix}{key}.")
        elif va != vb:
            keys.append(f"{prefix}{key}")
    return keys
