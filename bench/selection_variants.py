"""Selection rules for active distillation on digits, outside the pipeline: a plain training loop on
a finished default run's shards, scored on 65,536 held-out rows of its own, errors counted by input kind.

    python -m pipeline run --out runs/digits                      # once: the default run
    python bench/selection_variants.py runs/digits --mode uniform
    python bench/selection_variants.py runs/digits --select margin        # the product's least-sure rule
    python bench/selection_variants.py runs/digits --select ens --nens 2   # margin of two students' mean
    (also: qbc, mixrand, mixsure, nomix; --seed, --width, --temp, --hinge, --hinge-from, --ema,
    --uniform-rows 131072 for uniform at twice the labels)

Round 0 trains on the first half of the run's training rows; each later round picks, from a pool of
--pool times its labels drawn by the run's generator, the candidates the rule ranks first, labels
them with the run's teacher and trains again. The held-out rows are cached in DIR/bench-heldout.npz.
"""
import sys, time, dataclasses, argparse, os
import os as _os
sys.path.insert(0, _os.path.join(_os.path.dirname(__file__), ".."))
import numpy as np, torch
from pipeline import shards
from pipeline.run import rundir
from pipeline.__main__ import parse
from pipeline.train.trainer import build_module
from pipeline.teach.load import load_teacher
from pipeline.inputs.seeds import load_seed
from pipeline.inputs.images import generate_inputs, shard_seed, decode_numpy
from students.module import make_optimizer, make_schedule
p = argparse.ArgumentParser()
p.add_argument("run"); p.add_argument("--rounds", type=int, default=3); p.add_argument("--pool", type=int, default=16)
p.add_argument("--epochs", type=int, default=150); p.add_argument("--round-epochs", type=int, default=30)
p.add_argument("--mode", default="adapt"); p.add_argument("--select", default="margin")
p.add_argument("--threads", type=int, default=2); p.add_argument("--first", type=float, default=0.5)
p.add_argument("--hinge", type=float, default=0.0); p.add_argument("--temp", type=float, default=1.0)
p.add_argument("--uniform-rows", type=int, default=0); p.add_argument("--seed", type=int, default=0); p.add_argument("--nens", type=int, default=2); p.add_argument("--width", type=int, default=112); p.add_argument("--ema", type=float, default=0.0); p.add_argument("--hinge-from", type=float, default=0.0)
a = p.parse_args()
torch.set_num_threads(a.threads)
cfg = parse(["train", "--out", a.run])[1]
cfg = dataclasses.replace(cfg, student=dataclasses.replace(cfg.student, width=a.width), train=dataclasses.replace(cfg.train, margin_weight=a.hinge, temperature=a.temp))
paths = rundir.RunPaths(a.run)
man = shards.require_manifest(paths.split("train"))
full = shards.read_split(paths.split("train"), man)
teacher, card = load_teacher(paths)
seed = load_seed(cfg).train_images
per = cfg.data.samples_per_shard
def label_inputs(x):
    with torch.no_grad():
        return np.concatenate([np.asarray(teacher(decode_numpy(x[i:i+4096], (1, 8, 8)))) for i in range(0, len(x), 4096)])
def gen(tag, n):
    parts = [generate_inputs(seed, cfg.data, shard_seed(4242, tag, i), per) for i in range(-(-n // per))]
    return np.concatenate([q[0] for q in parts])[:n], np.concatenate([q[1] for q in parts])[:n]
cache = os.path.join(a.run, "bench-heldout.npz")
if os.path.exists(cache):
    z = np.load(cache); hx, hk, hy = z["x"], z["k"], z["y"]
else:
    hx, hk = gen("bigheld", 65536); hy = label_inputs(hx); np.savez(cache, x=hx, k=hk, y=hy)
held = {"input": torch.from_numpy(hx.reshape(len(hx), *full["input"].shape[1:])), "logits": torch.from_numpy(hy).to(full["logits"].dtype)}
if a.uniform_rows:
    ex, _ = gen("extra", a.uniform_rows - man.rows)
    full = {"input": torch.cat([full["input"], torch.from_numpy(ex.reshape(len(ex), *full["input"].shape[1:]))]),
            "logits": torch.cat([full["logits"], torch.from_numpy(label_inputs(ex)).to(full["logits"].dtype)])}
def fit(data, epochs, seed=0, final=True):
    t = cfg.train; b = t.batch_size; steps = len(data["input"]) // b
    c = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed, margin_weight=a.hinge if final else 0.0))
    torch.manual_seed(seed)
    m = build_module(c, man, steps).train()
    opt = make_optimizer(m.student.parameters(), t.lr); sch = make_schedule(opt, t.schedule, t.lr, steps * epochs)
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    ema = AveragedModel(m.student, multi_avg_fn=get_ema_multi_avg_fn(a.ema)) if (a.ema and final) else None
    for e in range(epochs):
        m.margin_weight = c.train.margin_weight if e >= a.hinge_from * epochs else 0.0
        order = torch.randperm(len(data["input"]), generator=torch.Generator().manual_seed(e + 1000 * seed))
        for i in range(steps):
            rows = order[i*b:(i+1)*b]
            loss, _ = m.loss_and_agreement({k: v[rows] for k, v in data.items()})
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); sch.step()
            if ema is not None: ema.update_parameters(m.student)
    if ema is not None: m.student = ema.module
    return m.eval()
def logits_of(m, x):
    with torch.no_grad():
        return torch.cat([m.student(m.decode(torch.from_numpy(x[i:i+8192]))) for i in range(0, len(x), 8192)]).float()
def report(tag, m, data):
    s = logits_of(m, hx); wrong = (s.argmax(1) != torch.from_numpy(hy).float().argmax(1)).numpy()
    st = logits_of(m, data["input"].numpy()); tr = float((st.argmax(1) == data["logits"].float().argmax(1)).float().mean())
    kinds = " ".join(f"{k}:{int(wrong[hk == i].sum())}" for i, k in enumerate(("augment", "mixup", "noise")) if (hk == i).any())
    top2 = s.topk(2, 1).values; mg = (top2[:, 0] - top2[:, 1]).numpy(); thr = np.quantile(mg, 1 / 16); th2 = torch.from_numpy(hy).float().topk(2, 1).values; tmg = (th2[:, 0] - th2[:, 1]).numpy()
    for i, kname in enumerate(("augment", "mixup", "noise")):
        sel = hk == i
        print(f"   {kname}: rows {sel.sum()} share-below-thr {np.mean(mg[sel] < thr):.3f} errors {int(wrong[sel].sum())} of-which-below-thr {np.mean(mg[sel & wrong] < thr):.3f} err-margin-q50 {np.median(mg[sel & wrong]):.3f} teacher-margin-of-errors q25/50/75 {np.round(np.quantile(tmg[sel & wrong], [0.25, 0.5, 0.75]), 3).tolist()} errors-with-teacher-margin<0.05 {int(((tmg < 0.05) & sel & wrong).sum())} rows-with-tm<0.05 {int(((tmg < 0.05) & sel).sum())}")
    print(f"{tag}: {len(data['input'])} rows held-dis {wrong.mean():.5f} train {tr:.4f} [{kinds}] ({time.perf_counter()-t0:.0f}s)", flush=True)
t0 = time.perf_counter()
if a.mode == "uniform":
    report("uniform", fit(full, a.epochs, a.seed), full); sys.exit()
total = man.rows; first = int(total * a.first)
data = {k: v[:first] for k, v in full.items()}
plan = [first] + [(total - first) // a.rounds] * a.rounds
ms = [fit(data, a.round_epochs, s, False) for s in range(a.nens if a.select in ("qbc", "ens") else 1)]
for r in range(1, a.rounds + 1):
    k = plan[r]
    xs, ks = gen(f"pool{r}" + (f"-{a.seed}" if a.seed else ""), k * a.pool)
    outs = [logits_of(m, xs) for m in ms]
    if a.select == "margin":
        t2 = outs[0].topk(2, 1).values; score = -(t2[:, 0] - t2[:, 1]).numpy()
    elif a.select == "ens":
        t2 = (sum(outs) / len(outs)).topk(2, 1).values; score = -(t2[:, 0] - t2[:, 1]).numpy()
    elif a.select == "mixrand":
        score = (ks == 1) + np.random.default_rng(r).random(len(ks)) * 0.5
    elif a.select == "mixsure":
        t2 = outs[0].topk(2, 1).values; score = (ks == 1) * 100 - (t2[:, 0] - t2[:, 1]).numpy()
    elif a.select == "nomix":
        t2 = outs[0].topk(2, 1).values; score = -(ks == 1).astype(float) * 100 - (t2[:, 0] - t2[:, 1]).numpy()
    elif a.select == "qbc":
        lp = [o.log_softmax(1) for o in outs]
        score = (0.5 * ((lp[0].exp() * (lp[0] - lp[1])).sum(1) + (lp[1].exp() * (lp[1] - lp[0])).sum(1))).numpy()
    pick = np.argsort(-score, kind="stable")[:k]
    x = xs[pick]; y = label_inputs(x)
    print(f"  round {r} picked kinds", np.bincount(ks[pick], minlength=3).tolist(), flush=True)
    data = {"input": torch.cat([data["input"], torch.from_numpy(x.reshape(len(x), *data["input"].shape[1:]))]),
            "logits": torch.cat([data["logits"], torch.from_numpy(y).to(data["logits"].dtype)])}
    last = r == a.rounds
    if last:
        m = fit(data, a.epochs, a.seed); report(f"adapt {a.select} round {r}", m, data)
    else:
        ms = [fit(data, a.round_epochs, s, False) for s in range(len(ms))]
