"""`datarena scenes` and `datarena metasim`: grammars, the renderer, learned generators."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from datarena.cli.common import (
    MNIST_DIR,
    app,
    console,
)
from datarena.errors import DatarenaError

scenes_app = typer.Typer(help="Scene grammars and the batched renderer (digits with class, mask and box).", no_args_is_help=True)
app.add_typer(scenes_app, name="scenes")


@scenes_app.command("list")
def scenes_list() -> None:
    """The shipped scene grammars."""
    from datarena.scenes.grammar import load_grammar, shipped_grammars
    from datarena.scenes.graph import is_graph_grammar, load_graph_grammar

    table = Table(title="shipped scene grammars")
    for col in ("name", "kind", "canvas", "objects", "description"):
        table.add_column(col, overflow="fold")
    for name in shipped_grammars():
        if is_graph_grammar(name):
            gg = load_graph_grammar(name)
            nodes = ", ".join(f"{t} ({spec.count.min}-{spec.count.max} per {spec.parent})" for t, spec in gg.types.items())
            table.add_row(name, "scene graph", f"{gg.canvas}x{gg.canvas}", nodes, gg.description.strip())
            continue
        g = load_grammar(name)
        table.add_row(name, "digits", f"{g.canvas}x{g.canvas}", f"{g.objects.min}-{g.objects.max}", g.description.strip())
    console.print(table)


@scenes_app.command("render")
def scenes_render(
    grammar: str = typer.Argument(None, help="A shipped grammar name (see `datarena scenes list`) or a YAML file."),
    generator: Path = typer.Option(None, "--generator", help="A learned Meta-Sim generator.pt: renders its prior rewritten by it."),
    n: int = typer.Option(1000, "--n", help="Number of scenes."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    seed: int = typer.Option(0, help="Seed; scene i is the same whatever n is."),
    fmt: str = typer.Option("voc", "--format", help="voc (JPEG + palette PNG masks) or npy (X, y, masks, classes, boxes)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing non-empty output directory."),
    mnist_dir: Path = MNIST_DIR,
) -> None:
    """Render a dataset of scenes with ground truth (any grammar kind, or a learned generator's renders)."""
    from datarena.scenes.writers import write_dataset, write_scenes

    if grammar is None and generator is None:
        raise DatarenaError("name a GRAMMAR (see `datarena scenes list`) or pass --generator generator.pt.")
    mnist = str(mnist_dir) if mnist_dir else None
    what = f"{grammar}" if generator is None else f"the prior of {generator} rewritten by it"
    if fmt == "voc":  # every kind, one writer
        if generator is not None:
            from datarena.metasim.io import write_generator_dataset

            path = write_generator_dataset(generator, n, seed, out, force=force, mnist_dir=mnist)
        else:
            path = write_dataset(grammar, n, seed, out, force=force, mnist_dir=mnist)
        console.print(f"wrote {n} scenes of {what} (voc) to {path}")
        return
    # npy: the hackathon layout, for the digit grammars
    from datarena.scenes.api import load
    from datarena.scenes.graph import SceneGraphGrammar

    transform = None
    if generator is not None:
        from datarena.metasim.io import load_generator

        transform, g = load_generator(generator)
    else:
        g = load(grammar)
    if isinstance(g, SceneGraphGrammar):
        raise DatarenaError("scene-graph grammars render to --format voc only.")
    path = write_scenes(g, n, seed, out, fmt=fmt, force=force, mnist_dir=mnist, transform=transform)
    console.print(f"wrote {n} scenes of {what} ({fmt}) to {path}; preview: {path / 'preview.png'}")


metasim_app = typer.Typer(help="Meta-Sim: learn a scene generator that matches a target distribution.", no_args_is_help=True)
app.add_typer(metasim_app, name="metasim")


@metasim_app.command("train")
def metasim_train(
    prior: str = typer.Option("mnist", "--prior", help="Prior grammar (name or YAML)."),
    target: str = typer.Option("mnist_rot90", "--target", help="Target grammar (its val digits drive training, its test digits score it)."),
    out: Path = typer.Option(None, "--out", help="Output directory (default: metasim-PRIOR-TARGET)."),
    epochs: int = typer.Option(80, help="Outer steps."),
    loss: str = typer.Option(None, help="mmd (the distribution; the default), both (MMD + REINFORCE on the task) or task (REINFORCE only)."),
    seed: int = typer.Option(0, help="Seed."),
    features: Path = typer.Option(None, "--features", help="Feature network checkpoint for the MMD (default: seeded random conv net)."),
    evaluate: bool = typer.Option(True, "--evaluate/--no-evaluate", help="Train task networks on prior / learned / target data and report target test accuracy."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
) -> None:
    """Train a generator from a prior grammar toward a target; writes curves, sample grids and generator.pt."""
    from datarena.metasim.train import MetaSimConfig, summarise, train_metasim
    from datarena.scenes.graph import is_graph_grammar

    out = out or Path(f"metasim-{Path(prior).stem}-{Path(target).stem}")
    if is_graph_grammar(prior):  # scene graphs (aerial): the graph generator, car IoU as the task
        from datarena.metasim.aerial import (
            AerialConfig,
            evaluate_aerial,
            save_aerial_run,
            train_aerial,
        )

        if features is not None:
            raise DatarenaError("--features applies to the MNIST grammars; scene graphs use seeded patch-statistics features.")
        try:
            acfg = AerialConfig(epochs=epochs, seed=seed, **({"loss": loss} if loss else {}))
        except ValueError as exc:
            raise DatarenaError(f"invalid Meta-Sim settings: {exc}") from None
        res = train_aerial(prior, target, acfg)
        if evaluate:
            res.report["evaluation"] = evaluate_aerial(prior, target, acfg, res.generator)
        save_aerial_run(res, prior, target, out, force=force)
        console.print(f"MMD^2 {res.report['mmd_before']:.3f} -> {res.report['mmd_after']:.3f}")
        for name, row in res.report.get("evaluation", {}).items():
            console.print(f"car IoU on target renders, trained on {name}: {row['car_iou']:.3f}")
        console.print(f"wrote {out}/: generator.pt, curves.png, scenes.png (prior / learned / target), report.json")
        return
    try:
        cfg = MetaSimConfig(epochs=epochs, seed=seed, **({"loss": loss} if loss else {}))
    except ValueError as exc:
        raise DatarenaError(f"invalid Meta-Sim settings: {exc}") from None
    result = train_metasim(prior, target, out, cfg, features=features, force=force, evaluate=evaluate)
    console.print(summarise(result))
    console.print(f"wrote {out}/: generator.pt, curves.png, samples_prior.png, samples_learned.png, samples_target.png, report.json")
