"""Products: several photos grouped into one record, through the CLI on the tiny model and the real engine."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from qvl_label import tinymodel
from qvl_label.cli import app
from qvl_label.errors import UsageError
from qvl_label.labeling.schema import PHOTO_ROLES
from qvl_label.pipeline.products import (
    Product,
    group_by_folder,
    group_by_pattern,
    photo_budget,
    product_digest,
    read_groups,
)
from qvl_label.pipeline.records import OK

from .conftest import AWKWARD

VIEWS = Path(__file__).parent / "fixtures" / "views"
runner = CliRunner()


def _model_args(model: tinymodel.GeneratedModel) -> list[str]:
    return ["--model", str(model.model), "--mmproj", str(model.mmproj), "--image-max-tokens", "64", "--lang", "en"]


def _records(data: bytes) -> list[dict]:
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


def _views(tmp_path: Path) -> Path:
    folder = tmp_path / "views"
    shutil.copytree(VIEWS, folder)
    return folder


# -- grouping -------------------------------------------------------------------------------


def test_the_default_pattern_groups_the_magento_views_into_their_three_products() -> None:
    products = group_by_pattern(sorted(str(p) for p in VIEWS.glob("*.jpg")))
    assert [Path(p.key).name for p in products] == ["mh01-gray", "wb04-blue", "wj04-white"]
    assert [len(p.paths) for p in products] == [3, 4, 4]
    assert all(Path(p.paths[0]).stem.endswith("main") for p in products)  # the main photo leads


def test_a_pattern_without_a_group_or_invalid_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="needs a group"):
        group_by_pattern(["a_1.jpg"], r"^a")
    with pytest.raises(UsageError, match="not a regular expression"):
        group_by_pattern(["a_1.jpg"], r"(")


def test_group_by_folder_and_a_stem_the_pattern_misses() -> None:
    products = group_by_folder(["shop/sku1/a.jpg", "shop/sku1/b.jpg", "shop/sku2/c.jpg"])
    assert [(p.key, len(p.paths)) for p in products] == [("shop/sku1", 2), ("shop/sku2", 1)]
    assert [p.key for p in group_by_pattern(["x/plain.jpg", "x/SKU-9_front.jpg"])] == ["x/plain", "x/SKU-9"]


def test_groups_csv_orders_photos_and_resolves_paths_next_to_it(tmp_path: Path) -> None:
    (tmp_path / "groups.csv").write_text("product,path,order\nP1,b.jpg,2\nP1,a.jpg,1\nP2,/abs/c.jpg,\n")
    products = read_groups(tmp_path / "groups.csv")
    assert products == [
        Product("P1", (str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"))),
        Product("P2", ("/abs/c.jpg",)),
    ]
    (tmp_path / "bad.csv").write_text("sku,file\nP1,a.jpg\n")
    with pytest.raises(UsageError, match="columns product and path"):
        read_groups(tmp_path / "bad.csv")


def test_no_more_photos_are_sent_than_the_budget_holds() -> None:
    from qvl_label.pipeline.products import photos_sent
    from qvl_label.settings import ProductSettings

    assert photos_sent(20, ProductSettings(max_tokens=1152, max_photos=4), 64) == 4
    assert photos_sent(20, ProductSettings(max_tokens=192, max_photos=4), 64) == 3
    assert photos_sent(2, ProductSettings(max_tokens=1152, max_photos=4), 64) == 2


def test_a_product_budget_is_shared_within_the_per_photo_bounds() -> None:
    assert photo_budget(4, 1152, 64, 576) == 288
    assert photo_budget(1, 1152, 64, 576) == 576  # one photo never exceeds --image-max-tokens
    assert photo_budget(20, 1152, 64, 576) == 64  # nor goes under --image-min-tokens


def test_the_product_key_for_cache_and_duplicates_is_the_set_of_photo_hashes() -> None:
    assert product_digest(["b", "a"]) == product_digest(["a", "b", "a"]) != product_digest(["a"])


# -- end to end through the CLI --------------------------------------------------------------


def test_describe_as_product_labels_several_photos_as_one_record(tiny_model: tinymodel.GeneratedModel) -> None:
    photos = [VIEWS / "mh01-gray_back.jpg", VIEWS / "mh01-gray_main.jpg", VIEWS / "mh01-gray_alt1.jpg"]
    result = runner.invoke(app, ["describe", *map(str, photos), "--as-product", "--no-cache", *_model_args(tiny_model)])
    assert result.exit_code in (0, 1), result.output
    (record,) = _records(result.stdout_bytes)
    assert record["product"].endswith("mh01-gray") and record["path"].endswith("mh01-gray_main.jpg")
    assert [Path(i["path"]).name for i in record["images"]] == ["mh01-gray_main.jpg", "mh01-gray_back.jpg",
                                                               "mh01-gray_alt1.jpg"]  # fmt: skip
    # each photo is its own image chunk in the one sequence: three budgets' worth of image tokens
    per_photo = record["images"][0]["image"]["model_input"]
    assert record["tokens"]["image"] == 3 * (per_photo[0] // 32) * (per_photo[1] // 32)
    if record["status"] == OK:
        assert all(i["role"] in PHOTO_ROLES for i in record["images"]) and record["label"]["category"]
        assert "photo_roles" not in record["label"]


def test_batch_group_by_pattern_resumes_and_reuses_by_the_set_of_photo_hashes(
    tiny_model: tinymodel.GeneratedModel, tmp_path: Path
) -> None:
    views = _views(tmp_path)
    out, cache = tmp_path / "out.jsonl", tmp_path / "cache.sqlite"
    args = ["batch", str(views), "-o", str(out), "--group-by", "pattern", "--cache", str(cache),
            "--product-max-tokens", "128", "--product-max-photos", "3", *_model_args(tiny_model)]  # fmt: skip
    first = runner.invoke(app, args)
    assert first.exit_code in (0, 1), first.output
    records = _records(out.read_bytes())
    assert [Path(r["product"]).name for r in records] == ["mh01-gray", "wb04-blue", "wj04-white"]
    wb04 = records[1]
    # 128 image tokens hold two photos at --image-min-tokens (64): the other two are listed, not sent
    assert [i["sent"] for i in wb04["images"]] == [True, True, False, False]
    assert wb04["images"][3]["status"] == "not_sent"
    assert all(i["image"]["model_input"] == [256, 256] for i in wb04["images"][:2])  # 64 tokens each
    # a second run resumes: nothing is labelled again
    second = runner.invoke(app, args)
    assert second.exit_code in (0, 1) and "3 products already done" in second.output
    assert len(_records(out.read_bytes())) == 3
    # the same photos under other names: a new product key, its label reused from the cache by photo hashes
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for photo in views.glob("mh01-gray_*"):
        shutil.copy(photo, renamed / photo.name.replace("mh01-gray", "copy"))
    third = runner.invoke(app, [*args[:1], str(renamed), *args[2:]])
    assert third.exit_code in (0, 1), third.output
    copy = _records(out.read_bytes())[-1]
    assert Path(copy["product"]).name == "copy" and copy["tokens"] is None
    assert copy["duplicate_of"]["path"] == records[0]["product"] and copy["label"] == records[0]["label"]


def test_a_bad_photo_is_listed_and_a_product_with_none_readable_is_an_error_record(
    tiny_model: tinymodel.GeneratedModel, tmp_path: Path
) -> None:
    folder = tmp_path / "shop"
    (folder / "sku1").mkdir(parents=True)
    (folder / "sku2").mkdir()
    shutil.copy(VIEWS / "wj04-white_main.jpg", folder / "sku1" / "main.jpg")
    shutil.copy(AWKWARD / "truncated.png", folder / "sku1" / "broken.png")
    shutil.copy(AWKWARD / "corrupt_header.jpg", folder / "sku2" / "only.jpg")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["batch", str(folder), "-o", str(out), "--group-by", "folder", "--no-cache",
                                 *_model_args(tiny_model)])  # fmt: skip
    assert result.exit_code == 1, result.output  # one product failed
    sku1, sku2 = _records(out.read_bytes())
    assert sku1["status"] != "no_readable_photo"
    assert [(Path(i["path"]).name, i["sent"]) for i in sku1["images"]] == [("main.jpg", True), ("broken.png", False)]
    assert sku1["images"][1]["status"] not in (OK, "not_sent") and sku1["images"][1]["error"]
    assert sku2["status"] == "no_readable_photo" and "only.jpg" in sku2["error"] and sku2["label"] is None


def test_groups_file_names_the_products(tiny_model: tinymodel.GeneratedModel, tmp_path: Path) -> None:
    views = _views(tmp_path)
    groups = tmp_path / "groups.csv"
    groups.write_text("product,path,order\nJACKET,views/wj04-white_back.jpg,2\nJACKET,views/wj04-white_main.jpg,1\n")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["batch", "--groups", str(groups), "-o", str(out), "--no-cache",
                                 *_model_args(tiny_model)])  # fmt: skip
    assert result.exit_code in (0, 1), result.output
    (record,) = _records(out.read_bytes())
    assert record["product"] == "JACKET"
    assert [Path(i["path"]).name for i in record["images"]] == ["wj04-white_main.jpg", "wj04-white_back.jpg"]
    assert views.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--group-by", "colour"], "--group-by must be one of"),
        (["--group-by", "folder", "--group-pattern", "(.+)_"], "--group-pattern goes with --group-by pattern"),
        (["--product-max-photos", "2"], "add --group-by or --groups"),
        (["--group-by", "folder", "--product-max-photos", "0"], "must be between 1 and 32"),
        (["--group-by", "folder", "--ray"], "leave --ray out"),
    ],
)
def test_product_options_are_checked(tiny_model: tinymodel.GeneratedModel, tmp_path: Path, extra: list[str],
                                     message: str) -> None:  # fmt: skip
    result = runner.invoke(app, ["batch", str(VIEWS), "-o", str(tmp_path / "o.jsonl"), *extra,
                                 *_model_args(tiny_model)])  # fmt: skip
    assert result.exit_code == 2 and message in result.output


def test_describe_product_options_need_as_product(tiny_model: tinymodel.GeneratedModel) -> None:
    result = runner.invoke(app, ["describe", str(VIEWS / "mh01-gray_main.jpg"), "--product-max-photos", "2",
                                 *_model_args(tiny_model)])  # fmt: skip
    assert result.exit_code == 2 and "add --as-product" in result.output


def test_a_shelf_photo_gets_a_scene_and_items_through_the_real_engine(tiny_model: tinymodel.GeneratedModel) -> None:
    """The grocery shelf photo (several products in one photo) on the real engine: the fields exist
    and are shaped; the random model's choice of scene means nothing."""
    from qvl_label.labeling.schema import MAX_ITEMS, SCENES

    from .conftest import PRODUCTS

    shelf = PRODUCTS / "Tropicana-Apple-Juice_001.jpg"
    result = runner.invoke(
        app, ["describe", str(shelf), "--no-cache", "--max-tokens", "12000", *_model_args(tiny_model)]
    )
    (record,) = _records(result.stdout_bytes)
    assert record["status"] == OK, record["error"]
    label = record["label"]
    assert label["scene"] in SCENES and len(label["items"]) <= MAX_ITEMS
    for item in label["items"]:
        assert isinstance(item["category"]["id"], int) and set(item["attributes"]) == {"colors", "materials"}


def test_colour_variants_are_products_of_their_own_unless_the_pattern_joins_them() -> None:
    """Magento names colour variants STYLE-COLOUR_VIEW: the default pattern keeps each colour apart."""
    names = ["luma/mh01-gray_main.jpg", "luma/mh01-black_main.jpg", "luma/mh01-gray_back.jpg", "luma/mb01-blue-0.jpg"]
    assert [p.key for p in group_by_pattern(names)] == ["luma/mh01-gray", "luma/mh01-black", "luma/mb01-blue"]
    by_style = group_by_pattern(names, r"^([a-z]+\d+)-")
    assert [(p.key, len(p.paths)) for p in by_style] == [("luma/mh01", 3), ("luma/mb01", 1)]
