"""Option types shared by several commands (typer `Annotated` aliases), defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

PresetOpt = Annotated[
    str | None,
    typer.Option(
        "--preset",
        envvar="QVL_LABEL_PRESET",
        show_envvar=True,
        help="Model preset from models.lock (default: the lock's default).",
    ),
]
ModelOpt = Annotated[Path | None, typer.Option("--model", help="A local GGUF model file (use with --mmproj).")]
MmprojOpt = Annotated[Path | None, typer.Option("--mmproj", help="A local mmproj GGUF vision file (use with --model).")]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="Never download; use the cache (also HF_HUB_OFFLINE=1).")]
LangOpt = Annotated[
    str,
    typer.Option(
        "--lang",
        envvar="QVL_LABEL_LANG",
        show_envvar=True,
        help="Comma-separated languages for the listing copy, e.g. zh,en,ja.",
    ),
]
GpuLayersOpt = Annotated[int, typer.Option("--gpu-layers", help="Layers to offload to the GPU; -1 = all.")]
CtxOpt = Annotated[int, typer.Option("--ctx", help="Context size in tokens; 0 = sized from the settings.")]
ThreadsOpt = Annotated[int, typer.Option("--threads", help="CPU threads; 0 = all cores.")]
ParallelOpt = Annotated[
    int, typer.Option("--parallel", help="Images decoded together in one context; 0 = automatic (memory, build).")
]
MinTokOpt = Annotated[int, typer.Option("--image-min-tokens", help="Fewest tokens an image is encoded into.")]
MaxTokOpt = Annotated[
    int, typer.Option("--image-max-tokens", help="Most tokens an image is encoded into (32x32 px each).")
]
MaxOutOpt = Annotated[int, typer.Option("--max-tokens", help="Output token limit per image; 0 = derived from --lang.")]
TempOpt = Annotated[float, typer.Option("--temperature", help="0 = greedy (deterministic).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Sampling seed when --temperature > 0.")]
GrammarOpt = Annotated[
    str,
    typer.Option(
        "--grammar",
        help="What constrains the JSON answer: llguidance, gbnf (llama.cpp's), or auto (llguidance where installed).",
    ),
]
JumpForwardOpt = Annotated[
    bool,
    typer.Option(
        "--jump-forward/--no-jump-forward",
        help="Append the tokens the grammar forces without a decode step each (llguidance only).",
    ),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks and llama.cpp's log.")]
ChannelOpt = Annotated[
    str, typer.Option("--channel", help="Copy style: generic, taobao, jd, xiaohongshu, amazon, shopify.")
]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Rewrite or drop flagged wording before output.")]
TemplateOpt = Annotated[
    Path | None, typer.Option("--template", help="TOML file adding or overriding templates, vocabularies, rules.")
]
CacheOpt = Annotated[
    Path | None, typer.Option("--cache", help="Label cache database (default: cache.sqlite in the state folder).")
]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the persistent label cache.")]
NearDupOpt = Annotated[
    bool, typer.Option("--near-dup", help="Reuse labels of near-identical photos (re-encoded, resized, cropped).")
]
NearDupDistanceOpt = Annotated[
    int, typer.Option("--near-dup-distance", help="Max perceptual-hash distance (of 64 bits) for --near-dup.")
]

# products: several photos, one record
ProductMaxTokensOpt = Annotated[
    int,
    typer.Option(
        "--product-max-tokens",
        help="Image tokens one product's photos share (split evenly, each within --image-min/max-tokens).",
    ),
]
ProductMaxPhotosOpt = Annotated[
    int, typer.Option("--product-max-photos", help="Photos sent per product; the rest are listed in the record.")
]
GroupByOpt = Annotated[
    str | None,
    typer.Option(
        "--group-by",
        help="Label products, not photos: folder (each folder is a product) or pattern (see --group-pattern).",
    ),
]
GroupPatternOpt = Annotated[
    str | None,
    typer.Option(
        "--group-pattern",
        help="Regex on each file name's stem whose first group is the product key (default: up to the last _ or -).",
    ),
]
GroupsOpt = Annotated[
    Path | None,
    typer.Option("--groups", help="CSV of products: columns product, path (relative to the CSV), optional order."),
]

# batch --ray
RayOpt = Annotated[
    bool, typer.Option("--ray", help="Label on a Ray cluster (extra qvl-label[ray]); a local one unless --ray-address.")
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option("--ray-address", help="Join a Ray cluster: auto (the one here) or HOST:PORT; implies --ray."),
]
ActorsOpt = Annotated[int, typer.Option("--actors", help="With --ray: model copies (actors) to run.")]
CpusPerActorOpt = Annotated[float, typer.Option("--cpus-per-actor", help="With --ray: CPUs per actor (its threads).")]
GpusPerActorOpt = Annotated[float, typer.Option("--gpus-per-actor", help="With --ray: GPUs per actor.")]
RayBatchSizeOpt = Annotated[
    int,
    typer.Option(
        "--ray-batch-size", help="With --ray: images per actor call; records reach the output as calls finish."
    ),
]
MaxErroredBlocksOpt = Annotated[
    int,
    typer.Option(
        "--max-errored-blocks",
        help="With --ray: blocks of images that may fail after Ray's retries; their images are left for the next run.",
    ),
]
ForceReplaceOpt = Annotated[
    bool, typer.Option("--force", help="Replace an existing output file that qvl-label did not write.")
]
