"""`recmtl prepare` and `recmtl info`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli._shell import console, given, user_errors
from cli.render import dataset_summary
from recmtl.config import PrepareConfig, build
from recmtl.data.pipeline import prepare as run_prepare
from recmtl.data.recipes import load_recipe
from recmtl.data.sources import SOURCES
from recmtl.data.store import open_dataset

SOURCE_HELP = f"Raw format: {', '.join(SOURCES)}. Default synthetic (no raw files needed)."

Opt = typer.Option


@user_errors
def prepare(
    out: Annotated[
        Path | None,
        Opt(
            "--out",
            "-o",
            help="Output directory, written atomically (default: data/NAME with --recipe, NAME the recipe's "
            "name or file stem; else data/synthetic).",
            show_default=False,
        ),
    ] = None,
    recipe: Annotated[
        Path | None, Opt(help="Dataset recipe (datasets/*.toml); options below override it.")
    ] = None,
    source: Annotated[str | None, Opt(help=SOURCE_HELP)] = None,
    raw: Annotated[Path | None, Opt(help="Raw data folder (or main file) of the source.")] = None,
    name: Annotated[
        str | None, Opt(help="Dataset name recorded in the manifest (default: out's name).")
    ] = None,
    min_rating: Annotated[
        float | None,
        Opt(help="Positive threshold on rating (default 4 for explicit ratings, none for implicit)."),
    ] = None,
    k_core: Annotated[
        int | None, Opt(help="Iterative k-core: drop users (and items) with fewer interactions.")
    ] = None,
    k_core_items: Annotated[
        int | None, Opt(help="k-core threshold for items, if different from --k-core.")
    ] = None,
    split: Annotated[
        str | None, Opt(help="random:0.8,0.1,0.1 (per user, seeded) | temporal:0.8,0.1,0.1 | loo | given.")
    ] = None,
    seed: Annotated[int | None, Opt(help="Seed for the split and the synthetic generator.")] = None,
    aux: Annotated[
        str | None,
        Opt(
            help="Auxiliary tables to write, comma-separated: social (social.parquet), category "
            "(item_category.parquet + categories.parquet), item_item (item_item.parquet, which train "
            "--aux coview and cobuy read). Default: all the source provides."
        ),
    ] = None,
    symmetric_social: Annotated[bool | None, Opt(help="Add the reverse of every social edge.")] = None,
    mat_key: Annotated[str | None, Opt(help="tang: key of the rating array in the .mat file.")] = None,
    trust_mat_key: Annotated[str | None, Opt(help="tang: key of the trust array.")] = None,
    columns: Annotated[
        str | None, Opt(help="csv/amazon2018 csv: column order, e.g. user,item,rating,ts.")
    ] = None,
    sep: Annotated[str | None, Opt(help="csv: field separator (default: sniffed).")] = None,
    header: Annotated[str | None, Opt(help="csv: auto | yes | no.")] = None,
    meta: Annotated[Path | None, Opt(help="amazon: meta file, if not in the raw folder.")] = None,
    social_file: Annotated[Path | None, Opt("--social", help="csv: social edge file (src,dst).")] = None,
    category_file: Annotated[Path | None, Opt("--categories", help="csv: item,category file.")] = None,
    item_item_file: Annotated[Path | None, Opt("--item-item", help="csv: src,dst[,kind] item edges.")] = None,
    train_file: Annotated[Path | None, Opt("--train", help="csv --split given: training file.")] = None,
    valid_file: Annotated[Path | None, Opt("--valid", help="csv --split given: validation file.")] = None,
    test_file: Annotated[Path | None, Opt("--test", help="csv --split given: test file.")] = None,
    category_top_k: Annotated[int | None, Opt(help="lastfm: number of top tags kept per artist.")] = None,
    users: Annotated[int | None, Opt(help="synthetic: number of users.")] = None,
    items: Annotated[int | None, Opt(help="synthetic: number of items.")] = None,
    interactions: Annotated[int | None, Opt(help="synthetic: number of sampled interactions.")] = None,
    social_signal: Annotated[
        float | None, Opt(help="synthetic: 0 (noise) .. 1 (homophilous social links).")
    ] = None,
    category_signal: Annotated[
        float | None, Opt(help="synthetic: 0 (random) .. 1 (categories follow factors).")
    ] = None,
    coview_signal: Annotated[
        float | None, Opt(help="synthetic: 0 (random) .. 1 (co-view within clusters).")
    ] = None,
    overwrite: Annotated[
        bool, Opt(help="Replace an existing output directory (only once the new one is complete).")
    ] = False,
    quiet: Annotated[bool, Opt(help="No progress or summary table.")] = False,
) -> None:
    """Turn a raw public dataset (or the synthetic default) into the parquet tables every stage reads.

    Steps, each an option with a recorded default: parse -> drop invalid rows -> positive threshold ->
    de-duplicate (keep latest) -> iterative k-core -> dense re-index -> per-user split -> auxiliary tables
    (social, item categories, item-item) restricted to kept ids -> manifest.json with counts, stats and a
    sha256 per table. The directory appears only once complete.
    """
    synthetic = given(
        users=users,
        items=items,
        interactions=interactions,
        social_signal=social_signal,
        category_signal=category_signal,
        coview_signal=coview_signal,
    )
    overrides = given(
        source=source,
        raw=raw,
        name=name,
        min_rating=min_rating,
        k_core=k_core,
        k_core_items=k_core_items,
        split=split,
        seed=seed,
        aux=aux,
        symmetric_social=symmetric_social,
        mat_key=mat_key,
        trust_mat_key=trust_mat_key,
        columns=columns,
        sep=sep,
        header=header,
        meta=meta,
        social_file=social_file,
        category_file=category_file,
        item_item_file=item_item_file,
        train_file=train_file,
        valid_file=valid_file,
        test_file=test_file,
        category_top_k=category_top_k,
    )
    if synthetic:
        overrides["synthetic"] = synthetic
    if recipe is not None:
        loaded = load_recipe(recipe)
        config = loaded.config(overrides)
        out = out or Path("data") / (loaded.prepare.get("name") or loaded.path.stem)
    else:
        config = build(PrepareConfig, overrides, where="command line")
        out = out or Path("data/synthetic")
    if quiet:
        manifest = run_prepare(config, out, overwrite=overwrite)
    else:
        with console.status("preparing") as status:
            manifest = run_prepare(config, out, overwrite=overwrite, progress=lambda s: status.update(s))
        console.print(dataset_summary(manifest))
        console.print(f"wrote {out}")


@user_errors
def info(
    data_dir: Annotated[Path, typer.Argument(help="A directory written by recmtl prepare.")],
    verify: Annotated[bool, Opt(help="Check every table's sha256 against the manifest.")] = True,
) -> None:
    """Print the summary of a prepared dataset (counts, stats, dropped rows) again."""
    dataset = open_dataset(data_dir, verify=verify)
    console.print(dataset_summary(dataset.manifest))
