"""Meta-Sim benchmarks: a task network trained on (a) the prior grammar, (b) the learned generator,
(c) the target grammar itself (the oracle), scored on held-out target data.

--pair mnist (default): the embedded-MNIST pairs, target test accuracy. Goals (issue 5): prior <= 20 %,
learned >= 98 % of the oracle on both pairs, learned mean rotation within 5 deg of the target, each run
under 15 minutes on 2 cores; plus the ablation MMD only / task only / both on the MNIST pair.
--pair aerial: scene graphs, car IoU of the dataset track's scoring instrument (preset aerial_scenes) on target renders, and the MMD before and
after. Goals (issue 21): learned >= 90 % of the oracle, prior <= 60 % of it, each seed under 20 minutes
on 2 cores; ablation rows: per-object MLP instead of the graph network, MMD only instead of MMD + task.
--pair random: targets nobody tuned for, drawn from a family seed (datarena.metasim.targets). --kind bigmnist
(10 targets: rotation in [0, 360), any centre where the digit fits, scale in [0.7, 1.3]): prior / learned / oracle
target test accuracy and the learned attributes; goal (issue 33) learned >= 0.95 of the oracle on >= 90 %.
--kind aerial (5 targets around aerial_target): car IoU through the aerial_scenes instrument; goal >= 0.90 on
>= 80 %. Family 0 is the tuning family; reported figures use family 1 (BigMNIST) and family 2 (aerial; family 1 was its development family).
Run: .venv/bin/python benchmarks/bench_metasim.py --pair random --family 1 [--kind aerial] [--select-by mmd] [--loss both]
     [--restarts 1] [--only 0 3] [--grids docs/img/metasim_random_{which}.png]
     (aerial: [--restarts 4] restarts over the road angle and car heading chosen by a CarProxy task score; [--eval-seeds 1];
     [--cache prior-oracle.json] keeps each target's prior and oracle IoU between runs)
     .venv/bin/python benchmarks/bench_metasim.py [--seeds 0 1 2] [--pairs mnist bigmnist] [--no-ablation] [--losses mmd task]
     .venv/bin/python benchmarks/bench_metasim.py --baselines-only --seeds 0 1 2 3 4   (prior and oracle only, ~40 s each)
     .venv/bin/python benchmarks/bench_metasim.py --pair aerial --seeds 0 1 2 [--ablation-seeds 0] [--png docs/img/aerial_scenes.png] [--diagnose]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from datarena.metasim.train import MetaSimConfig, evaluate_generators, rotation_error, train_metasim
from datarena.scenes.grammar import load_grammar

PAIRS = (("mnist", "mnist_rot90"), ("bigmnist", "bigmnist_rot270_shift"))


def run(prior: str, target: str, loss: str | None, seed: int, epochs: int, restarts: int | None = None) -> dict:
    """One train_metasim run; loss None = the default (MetaSimConfig's)."""
    over = {k: v for k, v in (("loss", loss), ("restarts", restarts)) if v is not None}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = train_metasim(prior, target, Path(tmp) / "run", MetaSimConfig(seed=seed, epochs=epochs, **over), show_progress=False)
        seconds = time.perf_counter() - t0
    ev, final = result.report["evaluation"], result.report["final"]
    tgt = load_grammar(target).object
    return {
        "prior": ev["prior"]["target_test_accuracy"], "learned": ev["learned"]["target_test_accuracy"],
        "oracle": ev["target_oracle"]["target_test_accuracy"], "ratio": ev["learned_over_oracle"],
        "rot": final["rotation"], "rot_err": rotation_error(final["rotation"], tgt.rotation.mean_value()),
        "pos_err": ((final["x"] - tgt.x.mean_value()) ** 2 + (final["y"] - tgt.y.mean_value()) ** 2) ** 0.5,
        "seconds": seconds,
    }


def random_family(family_seed: int, count: int, only: list[int] | None, loss: str, epochs: int, seed: int,
                  restarts: int, select_by: str, out_png: str | None) -> None:
    """BigMNIST targets drawn from a family seed (datarena.metasim.targets): per target, prior / learned /
    oracle target test accuracy, the learned attributes against the target's, and seconds."""
    from datarena.metasim.targets import digit_targets

    targets = digit_targets(family_seed, count)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; family {family_seed}, loss {loss}, "
          f"epochs {epochs}, restarts {restarts} (chosen by {select_by}), seed {seed}")
    print(f"{'target':22s} {'rot':>5s} {'x':>5s} {'y':>5s} {'scale':>5s} | {'prior':>6s} {'learned':>7s} {'oracle':>6s} "
          f"{'l/o':>5s} | {'rot':>6s} {'rot err':>7s} {'pos err':>7s} {'scale':>5s} {'s':>5s}")
    ratios, best, worst = [], None, None
    for i, target in enumerate(targets):
        if only and i not in only:
            continue
        cfg = MetaSimConfig(loss=loss, seed=seed, epochs=epochs, restarts=restarts, select_by=select_by)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            result = train_metasim("bigmnist", target, Path(tmp) / "run", cfg, show_progress=False)
            seconds = time.perf_counter() - t0
            ev, final, o = result.report["evaluation"], result.report["final"], target.object
            ratio = ev["learned_over_oracle"]
            ratios.append(ratio)
            print(f"{target.name:22s} {o.rotation.mean_value():5.0f} {o.x.mean_value():5.1f} {o.y.mean_value():5.1f} "
                  f"{o.scale.mean_value():5.2f} | {ev['prior']['target_test_accuracy']:6.3f} "
                  f"{ev['learned']['target_test_accuracy']:7.3f} {ev['target_oracle']['target_test_accuracy']:6.3f} "
                  f"{ratio:5.3f} | {final['rotation'] % 360:6.1f} {rotation_error(final['rotation'], o.rotation.mean_value()):7.1f} "
                  f"{((final['x'] - o.x.mean_value()) ** 2 + (final['y'] - o.y.mean_value()) ** 2) ** 0.5:7.1f} "
                  f"{final['scale']:5.2f} {seconds:5.0f}", flush=True)
            for row in result.report["restarts"]:
                mark = "*" if row.get("chosen") else " "
                score = f"task score {row['task_score']:.3f}" if "task_score" in row else ""
                print(f"    {mark} start +{row['start_turn'] * 360:3.0f} deg: rotation {row['attributes']['rotation'] % 360:6.1f}, "
                      f"MMD {row['mmd']:.4f} {score}", flush=True)
            if out_png:
                for name, keep in (("best", best is None or ratio > best[0]), ("worst", worst is None or ratio < worst[0])):
                    if keep:
                        dest = Path(out_png.replace("{which}", name))
                        _triptych(Path(tmp) / "run", dest, f"{target.name}: l/o {ratio:.3f}")
                        if name == "best":
                            best = (ratio, dest)
                        else:
                            worst = (ratio, dest)
    share = sum(r >= 0.95 for r in ratios) / max(len(ratios), 1)
    print(f"learned / oracle >= 0.95 on {sum(r >= 0.95 for r in ratios)} of {len(ratios)} targets ({share:.0%}); "
          f"median {float(np.median(ratios)):.3f}, min {min(ratios):.3f}", flush=True)


def random_aerial(family_seed: int, count: int, only: list[int] | None, epochs: int | None, seed: int,
                  eval_seeds: int | None, loss: str | None, grids: str | None = None, restarts: int | None = None,
                  select_by: str = "task", cache: Path | None = None) -> None:
    """aerial -> targets drawn around aerial_target (datarena.metasim.targets.aerial_targets): per target the
    car IoU (the aerial_scenes instrument) of prior / learned / oracle, learned car attributes against the
    target's, seconds. `cache`: a JSON file keeping each target's prior and oracle IoU (they do not depend
    on the generator) between runs."""
    from datarena.metasim.aerial import (
        AerialConfig,
        evaluate_aerial,
        node_attributes,
        save_aerial_grid,
        train_aerial,
    )
    from datarena.metasim.targets import aerial_targets
    from datarena.scenes.graph import sample_graphs

    over = {"seeds": eval_seeds} if eval_seeds else {}
    base = {"epochs": epochs} if epochs else {}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; aerial family {family_seed}, seed {seed}, "
          f"training seeds per score: {eval_seeds or 'as the preset'}")
    print(f"{'target':18s} {'prior':>6s} {'learned':>7s} {'oracle':>6s} {'l/o':>5s} {'p/o':>5s} | "
          f"{'head tgt':>10s} {'learned':>7s} {'|lat| tgt':>9s} {'learned':>7s} {'L x W':>9s} {'s':>5s}")
    ratios = []
    for i, target in enumerate(aerial_targets(family_seed, count)):
        if only and i not in only:
            continue
        cfg = AerialConfig(seed=seed, eval_overrides=over, select_by=select_by, **base, **({"loss": loss} if loss else {}),
                           **({"restarts": restarts} if restarts else {}))
        t0 = time.perf_counter()
        res = train_aerial("aerial", target, cfg, show_progress=False)
        train_s = time.perf_counter() - t0
        key = f"{target.name} seed {seed} eval {eval_seeds or 'preset'}"
        known = json.loads(cache.read_text()) if cache and cache.exists() else {}
        which = ("learned",) if key in known else ("prior", "learned", "target_oracle")
        ev = evaluate_aerial("aerial", target, cfg, res.generator, which)
        if key in known:
            ev |= {k: {"car_iou": v} for k, v in known[key].items()}
        elif cache:
            cache.write_text(json.dumps(known | {key: {k: ev[k]["car_iou"] for k in ("prior", "target_oracle")}}, indent=1))
        p, learned, o = (ev[k]["car_iou"] for k in ("prior", "learned", "target_oracle"))
        for r in res.report["restarts"]:
            print(f"    start turn {r['start_turn']:.2f}: MMD {r['mmd']:.3f}, task score {r.get('task_score', float('nan')):.3f}"
                  f"{'  <- chosen' if r.get('chosen') else ''}")
        probe = sample_graphs(target, 192, seed + 5)
        want, got = node_attributes(probe.attrs, target, probe), res.report["attributes_learned"]
        ratios.append(learned / o)
        if grids:  # prior / learned (the same scenes through the generator) / target, one PNG per target
            save_aerial_grid("aerial", target, res.generator, grids.replace("{which}", target.name), seed=seed)
        print(f"{target.name:18s} {p:6.3f} {learned:7.3f} {o:6.3f} {learned / o:5.2f} {p / o:5.2f} | "
              f"{want['car.heading']:10.1f} {got['car.heading']:7.1f} {want['car.lateral']:9.1f} {got['car.lateral']:7.1f} "
              f"{got['car.length']:4.1f}x{got['car.width']:<4.1f} {time.perf_counter() - t0:5.0f}   (training {train_s:.0f} s; {target.description})", flush=True)
    print(f"learned / oracle >= 0.90 on {sum(r >= 0.9 for r in ratios)} of {len(ratios)} targets; "
          f"median {float(np.median(ratios)):.3f}, min {min(ratios):.3f}", flush=True)


def _triptych(run: Path, dest: Path, title: str) -> None:
    """One PNG of a run's sample grids side by side: prior / learned / target."""
    from PIL import Image, ImageDraw

    ims = [Image.open(run / f"samples_{k}.png").convert("RGB") for k in ("prior", "learned", "target")]
    w, h = sum(i.width for i in ims), max(i.height for i in ims) + 18
    canvas = Image.new("RGB", (w, h), "white")
    x = 0
    for im in ims:
        canvas.paste(im, (x, 18))
        x += im.width
    ImageDraw.Draw(canvas).text((4, 2), f"{title}   (prior | learned | target)", fill="black")
    dest.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(dest)


def baselines(seeds: list[int]) -> None:
    """The two reference points of the goals, over several seeds: they vary more than the learned runs."""
    print(f"{'pair':36s} {'seed':>4s} {'prior':>6s} {'oracle':>6s} {'s':>4s}")
    for prior, target in PAIRS:
        accs = []
        for seed in seeds:
            t0 = time.perf_counter()
            ev = evaluate_generators(load_grammar(prior), load_grammar(target), None, MetaSimConfig(seed=seed))
            accs.append((ev["prior"]["target_test_accuracy"], ev["target_oracle"]["target_test_accuracy"]))
            print(f"{prior + ' -> ' + target:36s} {seed:4d} {accs[-1][0]:6.3f} {accs[-1][1]:6.3f} {time.perf_counter() - t0:4.0f}", flush=True)
        p, o = torch.tensor(accs).T
        print(f"{prior + ' -> ' + target:36s} mean {p.mean():6.3f} {o.mean():6.3f}  (prior std {p.std():.3f})", flush=True)


def aerial(seeds: list[int], ablation_seeds: list[int], epochs: int | None, png: str | None, loss: str | None = None,
           rows: tuple[str, ...] = ("main", "other-loss", "per-object"), reference: tuple[float, float] | None = None,
           diagnose: bool = False) -> None:
    from datarena.metasim.aerial import (
        AerialConfig,
        evaluate_aerial,
        save_aerial_grid,
        train_aerial,
    )

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; aerial -> aerial_target, car IoU (the aerial_scenes scoring instrument)")
    print(f"{'run':22s} {'seed':>4s} {'mmd0':>6s} {'mmd1':>6s} {'prior':>6s} {'learned':>7s} {'oracle':>6s} "
          f"{'l/o':>5s} {'p/o':>5s} {'car len':>7s} {'|lat|':>5s} {'|head|':>6s} {'s':>5s}")
    base = {"epochs": epochs} if epochs else {}
    label = {"both": "mmd+task", "mmd": "mmd only", "task": "task only"}
    loss = loss or AerialConfig().loss
    other = "both" if loss == "mmd" else "mmd"
    for seed in seeds:
        runs = {"main": (f"graph, {label[loss]}", AerialConfig(seed=seed, loss=loss, **base)),
                "other-loss": (f"graph, {label[other]}", AerialConfig(seed=seed, loss=other, **base)),
                "per-object": (f"per-object, {label[loss]}", AerialConfig(seed=seed, loss=loss, per_object=True, **base))}
        chosen = [r for r in rows if r == "main" or seed in ablation_seeds]
        known = {"prior": reference[0], "target_oracle": reference[1]} if reference else {}
        for row in chosen:
            name, cfg = runs[row]
            t0 = time.perf_counter()
            res = train_aerial(cfg=cfg, show_progress=False)
            which = ("learned",) if known else ("prior", "learned", "target_oracle")
            ev = evaluate_aerial("aerial", "aerial_target", cfg, res.generator, which)
            known = known or {k: ev[k]["car_iou"] for k in ("prior", "target_oracle")}
            p, o, learned = known["prior"], known["target_oracle"], ev["learned"]["car_iou"]
            attrs = res.report["attributes_learned"]
            print(f"{name:22s} {seed:4d} {res.report['mmd_before']:6.3f} {res.report['mmd_after']:6.3f} {p:6.3f} {learned:7.3f} "
                  f"{o:6.3f} {learned / o:5.2f} {p / o:5.2f} {attrs['car.length']:7.1f} {attrs['car.lateral']:5.1f} {attrs['car.heading']:6.0f} "
                  f"{time.perf_counter() - t0:5.0f}", flush=True)
            if diagnose:  # why a network scores what it does: precision, recall, what its false positives cover
                for which_net, row_ev in ev.items():
                    fp = ", ".join(f"{k} {v:.0%}" for k, v in row_ev["fp_on"].items())
                    print(f"  {which_net:13s} precision {row_ev['precision']:.3f} recall {row_ev['recall']:.3f}; "
                          f"false positives on: {fp}", flush=True)
            if png and seed == seeds[0] and row == "main":
                save_aerial_grid("aerial", "aerial_target", res.generator, png, seed=seed)
                print(f"  scenes (prior / learned / target): {png}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pair", choices=["mnist", "aerial", "random"], default="mnist")
    parser.add_argument("--family", type=int, default=1, help="random: the family seed the targets are drawn from")
    parser.add_argument("--kind", choices=["bigmnist", "aerial"], default="bigmnist", help="random: which family")
    parser.add_argument("--eval-seeds", type=int, help="random aerial: training seeds per car-IoU score (default: the preset's 3)")
    parser.add_argument("--targets", type=int, help="random: how many targets the family has (10 bigmnist, 5 aerial)")
    parser.add_argument("--only", type=int, nargs="*", help="random: run only these target indices")
    parser.add_argument("--loss", choices=["both", "mmd", "task"], help="random: the loss (default: MetaSimConfig's)")
    parser.add_argument("--restarts", type=int, help="random / mnist: rotation restarts (default: MetaSimConfig's)")
    parser.add_argument("--cache", type=Path, help="random aerial: JSON file keeping each target's prior and oracle IoU")
    parser.add_argument("--select-by", choices=["task", "mmd"], default="task", help="random: how the restart is chosen")
    parser.add_argument("--grids", help="random: write prior/learned/target PNGs of the best and worst target "
                                        "(aerial: of every target, {which} = its name), e.g. docs/img/metasim_random_{which}.png")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--ablation-seeds", type=int, nargs="*", default=[0], help="aerial: seeds that also run the ablation rows")
    parser.add_argument("--png", help="aerial: write a PNG of prior / learned / target scenes here")
    parser.add_argument("--aerial-loss", choices=["both", "mmd", "task"],
                        help="aerial: the loss of the main rows (default: AerialConfig's); other-loss runs the other of both/mmd")
    parser.add_argument("--diagnose", action="store_true",
                        help="aerial: per scored network, car precision, recall and the classes under its false positives")
    parser.add_argument("--rows", nargs="+", choices=["main", "other-loss", "per-object"],
                        default=["main", "other-loss", "per-object"],
                        help="aerial: which rows (other-loss and per-object only on --ablation-seeds)")
    parser.add_argument("--reference", type=float, nargs=2, metavar=("PRIOR", "ORACLE"),
                        help="aerial, one seed: the prior's and the oracle's car IoU from an earlier run of that seed "
                             "(they do not depend on the generator); skips those two scorings")
    parser.add_argument("--epochs", type=int, help=f"default: {MetaSimConfig().epochs} (mnist), the AerialConfig default (aerial)")
    parser.add_argument("--pairs", nargs="+", choices=[p for p, _ in PAIRS], default=[p for p, _ in PAIRS],
                        help="mnist: which prior grammars' pairs run (default: both)")
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--losses", nargs="+", default=["default", "mmd", "task"], choices=["default", "both", "mmd", "task"],
                        help="which runs: default = the two pairs with MetaSimConfig's defaults; mmd / task / both = the "
                             "ablation on the MNIST pair")
    parser.add_argument("--baselines-only", action="store_true",
                        help="no Meta-Sim training: target test accuracy of the prior and the oracle per seed, both pairs")
    args = parser.parse_args()
    if args.pair == "aerial":
        if args.reference and len(args.seeds) != 1:
            parser.error("--reference holds one seed's prior and oracle IoU: give exactly one --seeds")
        aerial(args.seeds, [] if args.no_ablation else args.ablation_seeds, args.epochs, args.png, args.aerial_loss,
               tuple(args.rows), args.reference, args.diagnose)
        return
    args.epochs = args.epochs or MetaSimConfig().epochs
    if args.pair == "random" and args.kind == "aerial":
        random_aerial(args.family, args.targets or 5, args.only, args.epochs, args.seeds[0], args.eval_seeds, args.loss,
                      args.grids, args.restarts, args.select_by, args.cache)
        return
    if args.pair == "random":
        random_family(args.family, args.targets or 10, args.only, args.loss or MetaSimConfig().loss, args.epochs,
                      args.seeds[0], args.restarts or MetaSimConfig().restarts, args.select_by, args.grids)
        return
    if args.baselines_only:
        baselines(args.seeds)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; epochs {args.epochs}")
    header = f"{'pair':36s} {'loss':7s} {'seed':>4s} {'prior':>6s} {'learned':>7s} {'oracle':>6s} {'l/o':>5s} {'rot':>7s} {'rot err':>7s} {'pos err':>7s} {'s':>6s}"
    print(header)
    jobs = [(p, t, None) for p, t in PAIRS if p in args.pairs] if "default" in args.losses else []
    if not args.no_ablation:
        jobs += [("mnist", "mnist_rot90", loss) for loss in ("mmd", "task", "both") if loss in args.losses and "mnist" in args.pairs]
    for prior, target, loss in jobs:
        for seed in args.seeds:
            r = run(prior, target, loss, seed, args.epochs, args.restarts)
            print(f"{prior + ' -> ' + target:36s} {loss or 'default':7s} {seed:4d} {r['prior']:6.3f} {r['learned']:7.3f} {r['oracle']:6.3f} "
                  f"{r['ratio']:5.3f} {r['rot']:7.1f} {r['rot_err']:7.1f} {r['pos_err']:7.1f} {r['seconds']:6.0f}", flush=True)


if __name__ == "__main__":
    main()
