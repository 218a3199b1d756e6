"""Label content: taxonomy mapping, vocabulary normalisation, templates, channels, compliance, user template files."""

from __future__ import annotations

import copy as copylib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qvl_label.cli import app
from qvl_label.errors import UsageError
from qvl_label.labeling.compliance import check_copy
from qvl_label.labeling.config import load_config
from qvl_label.labeling.prompts import label_prompt
from qvl_label.labeling.schema import answer_schema, validate
from qvl_label.labeling.shaping import LabelShaper
from qvl_label.labeling.taxonomy import category_record, load_taxonomy
from qvl_label.pipeline.labeler import Labeler
from qvl_label.settings import EngineSettings, LabelSettings, Settings

from .conftest import PRODUCTS, sample_answer
from .test_labeler import ScriptedEngine

CONFIG = load_config()

# (top level, the model's deeper path, expected taxonomy id) - wording as real models and catalogues phrase it
TAXONOMY_CASES = [
    ("Apparel & Accessories", ["Clothing", "Dresses"], 2271),
    ("Apparel & Accessories", ["Clothing", "Tops", "T-Shirts"], 212),
    ("Apparel & Accessories", ["Clothing", "Hoodies & Sweatshirts"], 5322),
    ("Apparel & Accessories", ["Clothing", "Jeans"], 204),
    ("Apparel & Accessories", ["Clothing", "Outerwear", "Jackets"], 5598),
    ("Apparel & Accessories", ["Clothing", "Skirts"], 1581),
    ("Apparel & Accessories", ["Shoes", "Running Shoes"], 187),
    ("Apparel & Accessories", ["Footwear", "Sneakers"], 187),
    ("Apparel & Accessories", ["Jewelry", "Earrings"], 194),
    ("Apparel & Accessories", ["Watches"], 201),
    ("Apparel & Accessories", ["Eyewear", "Sunglasses"], 178),
    ("Apparel & Accessories", ["Handbags, Wallets & Cases", "Wallets"], 2668),
    ("Luggage & Bags", ["Duffel Bags"], 103),
    ("Luggage & Bags", ["Backpacks"], 100),
    ("Food, Beverages & Tobacco", ["Beverages", "Juice", "Apple Juice"], 2887),
    ("Food, Beverages & Tobacco", ["Beverages", "Milk"], 418),
    ("Food, Beverages & Tobacco", ["Dairy Products", "Yogurt"], 1954),
    ("Food, Beverages & Tobacco", ["Food Items", "Fruits & Vegetables"], 430),
    ("Health & Beauty", ["Personal Care", "Cosmetics", "Skin Care"], 567),
    ("Health & Beauty", ["Makeup", "Lipstick"], 3021),
    ("Health & Beauty", ["Nail Polish"], 2683),
    ("Home & Garden", ["Kitchen & Dining", "Drinkware", "Mugs"], 2169),
    ("Electronics", ["Audio", "Headphones"], 543626),
    ("Electronics", ["Communications", "Mobile Phones"], 267),
    ("Electronics", ["Computers", "Laptops"], 328),
    ("Sporting Goods", ["Exercise & Fitness", "Yoga Mats"], 3640),
    ("Furniture", ["Sofas"], 460),
    ("Toys & Games", ["Toys", "Building Toys"], 1254),
]


@pytest.mark.parametrize(("top", "path", "expected"), TAXONOMY_CASES)
def test_taxonomy_mapping(top: str, path: list[str], expected: int) -> None:
    record = category_record(load_taxonomy(), top, path, ("zh",))
    assert record["id"] == expected, record


def test_taxonomy_ids_are_always_real_and_named_in_chinese() -> None:
    taxonomy = load_taxonomy()
    assert len(taxonomy.nodes) == 5595 and len(taxonomy.top_levels) == 21
    record = category_record(taxonomy, "Apparel & Accessories", ["Clothing", "Dresses"], ("zh", "en"))
    assert record["names"]["zh"] == ["服饰与配饰", "服装", "连衣裙"]
    assert "en" not in record["names"]  # English is `path` itself
    japanese = category_record(taxonomy, "Apparel & Accessories", ["Clothing", "Dresses"], ("ja",))
    assert japanese["names"]["ja"] == [
        "ファッション・アクセサリー",
        "衣料品",
        "Dresses",
    ]  # untranslated levels stay English
    for top, path in [("Apparel & Accessories", ["qxz vvv"]), ("Mature", ["Gibberish ɐ"]), ("Software", [])]:
        fallback = category_record(taxonomy, top, path, ("zh",))
        assert taxonomy.nodes[fallback["id"]].path == (top,)  # nothing forced onto a wrong leaf
    for node in taxonomy.nodes.values():  # every top and second level has a Chinese name
        if len(node.path) <= 2:
            assert node.id in taxonomy.names["zh"], node


COLOUR_CASES = {
    "red": [
        "酒红",
        "砖红",
        "复古红",
        "burgundy",
        "maroon",
        "wine red",
        "Wine Red",
        "酒红色",
        "深酒红色",
        "crimson",
        "大红色",
        "西瓜红",
    ],
    "blue": [
        "navy",
        "navy blue",
        "Navy Blue",
        "teal",
        "藏青",
        "藏青色",
        "雾霾蓝",
        "royal blue",
        "denim",
        "dark navy",
        "天蓝色",
    ],
    "beige": ["khaki", "卡其色", "nude", "oatmeal", "米色", "奶茶色", "sand"],
    "white": ["off-white", "off white", "ivory", "米白色", "乳白", "cream"],
    "gold": ["champagne", "rose gold", "玫瑰金", "香槟金", "golden"],
    "grey": ["charcoal", "heather grey", "light heather grey", "灰色", "烟灰", "gray"],
    "brown": ["tan", "camel", "coffee brown", "Coffee Brown", "焦糖色", "驼色", "chocolate"],
    "green": ["olive", "army green", "军绿色", "墨绿", "mint", "sage", "neon green"],
    "pink": ["fuchsia", "玫红", "dusty rose", "pastel pink", "粉色", "blush"],
    "purple": ["lavender", "lilac", "mauve", "香芋紫", "plum"],
    "black": ["black", "jet black", "黑色", "曜石黑"],
    "silver": ["silver", "chrome", "银色", "steel"],
    "yellow": ["mustard", "芥末黄", "lemon", "鹅黄"],
    "orange": ["tangerine", "橘色", "rust", "coral"],
    "multicolour": ["black and white", "黑白拼色", "red/blue", "彩虹色", "multicolor"],
    "transparent": ["clear", "透明", "see-through"],
}


@pytest.mark.parametrize(("family", "wording"), [(f, w) for f, ws in COLOUR_CASES.items() for w in ws])
def test_colour_normalisation(family: str, wording: str) -> None:
    assert CONFIG.vocabularies["colors"].normalise(wording) == family


@pytest.mark.parametrize("wording", ["glittery", "holographic", "as shown", "", "见图", "iridescent sheen"])
def test_unknown_wording_keeps_raw_and_no_value(wording: str) -> None:
    assert CONFIG.vocabularies["colors"].normalise(wording) is None


@pytest.mark.parametrize(
    ("attribute", "wording", "value"),
    [
        ("materials", "100% cotton", "cotton"), ("materials", "纯棉", "cotton"), ("materials", "PU leather", "faux_leather"),
        ("materials", "genuine leather", "leather"), ("materials", "桑蚕丝", "silk"), ("materials", "spandex", "elastane"),
        ("materials", "925 silver", "sterling_silver"), ("materials", "stainless steel", "stainless_steel"),
        ("materials", "涤纶", "polyester"), ("materials", "Organic Cotton", "cotton"), ("materials", "莫代尔", "viscose"),
        ("patterns", "Color-Blocked", "colour_block"), ("patterns", "条纹", "striped"), ("patterns", "leopard print", "animal"),
        ("patterns", "gingham", "plaid"), ("style", "Athleisure", "sporty"), ("style", "复古", "vintage"),
        ("style", "boho", "bohemian"), ("season", "Fall", "autumn"), ("season", "all-weather", "all_season"),
        ("season", "四季", "all_season"), ("audience", "Women's", "women"), ("audience", "女款", "women"),
        ("audience", "boys", "kids"), ("audience", "宝宝", "baby"), ("audience", "dog", "pets"),
        ("usage_scenes", "Gym", "sports"), ("usage_scenes", "通勤", "work"), ("usage_scenes", "beach", "travel"),
    ],
)  # fmt: skip
def test_attribute_normalisation(attribute: str, wording: str, value: str) -> None:
    assert CONFIG.vocabularies[attribute].normalise(wording) == value


@pytest.mark.parametrize(
    ("category_id", "template"),
    [(2271, "apparel"), (212, "apparel"), (187, "shoes"), (103, "bags"), (3032, "bags"), (2887, "food"),
     (567, "beauty"), (2169, "home"), (460, "home"), (267, "electronics"), (1254, "toys"), (999, "sports"),
     (201, "generic"), (166, "generic")],
)  # fmt: skip
def test_template_follows_the_category(category_id: int, template: str) -> None:
    assert CONFIG.template_for(category_id).name == template


def _shape(answer: dict, channel: str = "generic", strict: bool = False, languages: tuple[str, ...] = ("en",)) -> dict:
    shaper = LabelShaper(CONFIG, CONFIG.channel(channel), languages, strict)
    assert validate(answer, answer_schema(languages, CONFIG, CONFIG.channel("generic"))) == []
    return shaper.shape(copylib.deepcopy(answer))


def test_details_of_the_wrong_template_are_dropped_with_a_warning() -> None:
    answer = sample_answer(
        details={"template": "shoes", "shoe_type": "sneakers", "closure": "laces", "heel": "flat", "toe": "round"}
    )
    label = _shape(answer)
    assert label["details"] is None
    assert "dropped" in label["warnings"][0]


COMPLIANCE_CASES = [
    ("zh", "title", "全网最低价纯棉T恤", "全网最低价", "zh-absolute-claim"),
    ("zh", "title", "最好的运动鞋", "最好", "zh-absolute-claim"),
    ("zh", "description", "国家级品质，顶级面料", "国家级", "zh-absolute-claim"),
    ("zh", "description", "销量第一的保温杯", "销量第一", "zh-absolute-claim"),
    ("zh", "description", "100%有效防晒", "100%有效", "zh-absolute-claim"),
    ("zh", "description", "极品大红袍", "极品", "zh-absolute-claim"),
    ("zh", "description", "穿上能减肥瘦身", "减肥", "zh-medical-claim"),
    ("zh", "description", "抗菌防臭袜子", "抗菌", "zh-medical-claim"),
    ("en", "title", "The best running shoe", "The best", "en-absolute-claim"),
    ("en", "title", "#1 yoga mat", "#1", "en-absolute-claim"),
    ("en", "description", "Guaranteed to last.", "Guaranteed", "en-absolute-claim"),
    ("en", "description", "This tea cures colds.", "cures", "en-medical-claim"),
    ("en", "description", "FDA approved fabric", "FDA approved", "en-medical-claim"),
]


@pytest.mark.parametrize(("lang", "field", "text", "term", "rule"), COMPLIANCE_CASES)
def test_compliance_flags(lang: str, field: str, text: str, term: str, rule: str) -> None:
    copy = {lang: {"title": "Plain title", "description": "Plain.", "selling_points": [], "tags": []}}
    copy[lang][field] = text
    flags, _ = check_copy(copy, CONFIG.rules, {166}, strict=False)
    match = [f for f in flags if f["text"].lower() == term.lower()]
    assert match, flags
    flag = match[0]
    assert flag["field"] == f"copy.{lang}.{field}" and flag["rule"] == rule
    assert text[flag["span"][0] : flag["span"][1]].lower() == term.lower()
    assert flag["suggestion"] and flag["action"] == "flagged"


def test_clean_copy_and_lookalike_words_are_not_flagged() -> None:
    copy = {
        "en": {
            "title": "Bestseller-style tee",
            "description": "A well-made cotton tee.",
            "selling_points": [],
            "tags": [],
        },
        "zh": {"title": "纯棉圆领T恤", "description": "柔软透气，适合日常穿着。", "selling_points": [], "tags": []},
    }
    assert check_copy(copy, CONFIG.rules, {166}, strict=False) == ([], [])


def test_medical_rules_skip_medical_goods() -> None:
    copy = {"en": {"title": "Pain relief gel", "description": "Treats muscle pain.", "selling_points": [], "tags": []}}
    assert check_copy(copylib.deepcopy(copy), CONFIG.rules, {469, 491}, strict=False) == ([], [])
    assert check_copy(copylib.deepcopy(copy), CONFIG.rules, {166}, strict=False)[0]


def test_strict_rewrites_and_says_so() -> None:
    answer = sample_answer(("zh", "en"))
    answer["copy"]["zh"]["title"] = "最好的酒红色T恤"
    answer["copy"]["zh"]["description"] = "顶级纯棉面料。穿着能排毒瘦身。适合夏季。"
    answer["copy"]["en"]["selling_points"] = ["Perfect fit", "Cures back pain", "Soft cotton"]
    flagged = _shape(answer, languages=("zh", "en"))
    assert flagged["copy"]["zh"]["title"] == "最好的酒红色T恤"
    assert not flagged["compliance"]["rewritten"] and len(flagged["compliance"]["flags"]) >= 4
    strict = _shape(answer, strict=True, languages=("zh", "en"))
    assert strict["copy"]["zh"]["title"] == "优质的酒红色T恤"
    assert strict["copy"]["zh"]["description"] == "高品质纯棉面料。适合夏季。"
    assert strict["copy"]["en"]["selling_points"] == ["Great fit", "Soft cotton"]
    assert strict["compliance"]["rewritten"]
    actions = {f["text"]: f["action"] for f in strict["compliance"]["flags"]}
    assert actions["最好"] == "rewritten" and actions["Cures"] == "sentence removed"


def test_channels_set_title_limits_and_emoji() -> None:
    answer = sample_answer(("zh",))
    answer["copy"]["zh"]["title"] = "酒红色T恤✨🔥"
    answer["copy"]["zh"]["selling_points"] = ["圆领💯", "短袖", "纯棉"]
    taobao = _shape(answer, channel="taobao", languages=("zh",))
    assert taobao["copy"]["zh"]["title"] == "酒红色T恤" and taobao["copy"]["zh"]["selling_points"][0] == "圆领"
    assert any("emoji" in w for w in taobao["warnings"])
    red_book = _shape(answer, channel="xiaohongshu", languages=("zh",))
    assert red_book["copy"]["zh"]["title"] == "酒红色T恤✨🔥"
    limits = {
        name: answer_schema(("zh", "en"), CONFIG, CONFIG.channel(name))["properties"]["copy"]["properties"]
        for name in CONFIG.channels
    }
    assert limits["taobao"]["zh"]["properties"]["title"]["maxLength"] == 30
    assert limits["amazon"]["en"]["properties"]["title"]["maxLength"] == 150
    assert "no emoji" in label_prompt(("en",), CONFIG, CONFIG.channel("amazon")).prefix
    with pytest.raises(UsageError, match="unknown channel"):
        CONFIG.channel("ebay")


USER_TEMPLATE = """
[prompt]
instructions = "Mention the fabric weight when it is printed on the label."

[vocabularies.colors.red]
synonyms = ["oxide red", "铁红"]

[vocabularies.colors.teal]
en = "teal"
zh = "蓝绿"
synonyms = ["teal", "duck egg"]

[templates.apparel.fields]
pocket = { description = "pockets", enum = ["none", "patch", "zip", "not visible"] }

[channels.ebay]
title_max = { default = 80 }
emoji = false
style = "eBay: item specifics first."

[[compliance.rules]]
id = "shop-banned"
lang = "en"
kind = "shop policy"
terms = ["replica"]
suggestion = "never call a product a replica"
"""


def test_user_template_file_changes_prompts_vocabularies_templates_and_rules(tmp_path: Path) -> None:
    path = tmp_path / "shop.toml"
    path.write_text(USER_TEMPLATE)
    config = load_config(path)
    colors = config.vocabularies["colors"]
    assert colors.normalise("oxide red") == "red" and colors.normalise("铁红") == "red"
    assert colors.normalise("burgundy") == "red"  # built-in synonyms are kept, not replaced
    assert colors.normalise("duck egg") == "teal" and colors.normalise("teal") == "teal"
    apparel = config.templates["apparel"]
    assert [f.name for f in apparel.fields][-1] == "pocket" and len(apparel.fields) == 6
    channel = config.channel("ebay")
    prompt = label_prompt(("en",), config, channel)
    assert "fabric weight" in prompt.prefix and "eBay" in prompt.prefix
    copy = {"en": {"title": "Replica watch", "description": ".", "selling_points": [], "tags": []}}
    assert check_copy(copy, config.rules, {166}, strict=False)[0][0]["rule"] == "shop-banned"
    assert config.digest != CONFIG.digest

    settings = Settings(
        engine=EngineSettings(model_path=Path("m"), mmproj_path=Path("p")),
        label=LabelSettings(languages=("en",), template_file=path, channel="ebay"),
    )
    plain = Settings(engine=settings.engine, label=LabelSettings(languages=("en",)))
    engine = ScriptedEngine(1)
    assert Labeler(settings, engine_factory=lambda _s: engine).run.fingerprint != (
        Labeler(plain, engine_factory=lambda _s: engine).run.fingerprint
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [("[oops", "not valid TOML"), ("[shipping]\nx = 1", "unknown section"), ("[templates.x]\ncategories = [1]\n", "")],
)
def test_bad_user_template_files_are_usage_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    if not message:  # a template with no fields is allowed
        load_config(path)
        return
    with pytest.raises(UsageError, match=message):
        load_config(path)


def test_cli_template_and_channel_options_are_checked_before_the_model_loads(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["describe", str(PRODUCTS / "ms04-red_main.jpg"), "--channel", "ebay"])
    assert bad.exit_code == 2 and "unknown channel" in bad.output
    missing = runner.invoke(app, ["describe", str(PRODUCTS / "ms04-red_main.jpg"), "--template", "nope.toml"])
    assert missing.exit_code == 2 and "cannot read template file" in missing.output


def test_strict_reaches_the_record_through_the_labeler() -> None:
    answer = sample_answer(("zh",))
    answer["copy"]["zh"]["title"] = "全网最低价 顶级纯棉T恤"

    class FlaggedEngine(ScriptedEngine):
        @staticmethod
        def _answer(request):  # type: ignore[no-untyped-def,override]
            from qvl_label.engine.protocol import Generation, TokenCounts

            return Generation(request.key, json.dumps(answer, ensure_ascii=False), "stop", TokenCounts(completion=9))

    settings = Settings(
        engine=EngineSettings(model_path=Path("m"), mmproj_path=Path("p")),
        label=LabelSettings(languages=("zh",), channel="taobao", strict=True),
    )
    (record,) = Labeler(settings, engine_factory=lambda _s: FlaggedEngine(1)).label(
        [str(PRODUCTS / "ms04-red_main.jpg")]
    )
    label = record["label"]
    assert label["copy"]["zh"]["title"] == "高品质纯棉T恤"
    assert label["compliance"]["rewritten"] and {f["text"] for f in label["compliance"]["flags"]} == {
        "全网最低价",
        "顶级",
    }
    assert label["attributes"]["colors"] == [{"raw": "wine red", "value": "red"}]
    assert label["category"] == {
        "id": 212,
        "path": ["Apparel & Accessories", "Clothing", "Shirts & Tops"],
        "names": {"zh": ["服饰与配饰", "服装", "衬衫与上衣"]},
        "raw": ["Apparel & Accessories", "Clothing", "Shirts & Tops"],
        "match": 1.0,
    }


def test_rules_are_matched_by_their_own_terms_even_when_objects_are_recycled() -> None:
    """Compiled patterns were once cached by id(rule); a new rule at a recycled address matched stale terms."""
    from qvl_label.labeling.compliance import find
    from qvl_label.labeling.config import Rule

    for i in range(50):
        rule = Rule(f"r{i}", "en", "test", (f"word{i}",), "", {}, ())
        assert [h.term for h in find(f"a word{i} here", [rule])] == [f"word{i}"]
        del rule


@pytest.mark.parametrize(
    "brand", ["N/A", "n/a", "无", "none", "None", "unknown", "不详", "Unknown.", " - ", "no brand"]
)
def test_no_brand_words_mean_no_brand(brand: str) -> None:
    label = LabelShaper(CONFIG, CONFIG.channel("generic"), ("en",)).shape(sample_answer(("en",), brand=brand))
    assert label["brand"] is None


@pytest.mark.parametrize("brand", ["Nike", "NA-KD", "Uniqlo", "无印良品", "None Such Co"])
def test_real_brands_are_kept(brand: str) -> None:
    label = LabelShaper(CONFIG, CONFIG.channel("generic"), ("en",)).shape(sample_answer(("en",), brand=brand))
    assert label["brand"] == brand


@pytest.mark.parametrize(
    ("attribute", "wording", "values"),
    [
        ("audience", "men and women", ["unisex"]),
        ("audience", "男女", ["unisex"]),
        ("audience", "women & kids", ["women", "kids"]),
        ("colors", "golden brown", ["brown"]),
        ("colors", "rose gold", ["gold"]),
        ("colors", "light golden yellow", ["yellow"]),
        ("materials", "cotton/polyester", ["cotton", "polyester"]),
        ("materials", "cotton and linen", ["cotton", "linen"]),
        ("materials", "棉麻", ["cotton", "linen"]),
        ("season", "春夏", ["spring", "summer"]),
        ("season", "秋冬", ["autumn", "winter"]),
        ("season", "spring/summer", ["spring", "summer"]),
        # hue compounds name one colour (the head comes last) ...
        ("colors", "灰蓝", ["blue"]),
        ("colors", "蓝绿", ["blue"]),
        ("colors", "黄绿", ["green"]),
        ("colors", "蓝灰色", ["grey"]),
        # ... two-colour combinations are multicolour
        ("colors", "黑白", ["multicolour"]),
        ("colors", "红蓝", ["multicolour"]),
        ("colors", "black and white", ["multicolour"]),
    ],
)
def test_wording_that_names_several_values(attribute: str, wording: str, values: list[str]) -> None:
    assert CONFIG.vocabularies[attribute].normalise_all(wording) == values


def test_a_blend_keeps_both_materials_in_the_label() -> None:
    answer = sample_answer(("en",), materials=["cotton/polyester"], season=["春夏"], audience=["men and women"])
    label = LabelShaper(CONFIG, CONFIG.channel("generic"), ("en",)).shape(answer)
    attributes = label["attributes"]
    assert [v["value"] for v in attributes["materials"]] == ["cotton", "polyester"]
    assert [v["raw"] for v in attributes["materials"]] == ["cotton/polyester"] * 2
    assert [v["value"] for v in attributes["season"]] == ["spring", "summer"]
    assert [v["value"] for v in attributes["audience"]] == ["unisex"]


def test_a_set_or_an_outfit_names_its_other_products_as_items() -> None:
    jeans = {"category": {"top": "Apparel & Accessories", "path": ["Clothing", "Pants"]}, "colors": ["Navy"],
             "materials": ["denim"], "title": " Navy jeans "}  # fmt: skip
    label = _shape(sample_answer(("en",), scene="outfit", items=[jeans]))
    assert label["scene"] == "outfit"
    (item,) = label["items"]
    assert item["category"]["path"] == ["Apparel & Accessories", "Clothing", "Pants"] and item["category"]["id"]
    assert item["attributes"]["colors"] == [{"raw": "Navy", "value": "blue"}] and item["title"] == "Navy jeans"
    assert _shape(sample_answer(("en",)))["items"] == []
    schema = answer_schema(("en",), CONFIG, CONFIG.channel("generic"))
    assert validate(sample_answer(("en",), scene="crowd"), schema)  # scene is one of three words
    assert validate(sample_answer(("en",), items=[jeans] * 5), schema)  # at most four other products


def test_title_and_description_are_never_empty_under_the_grammar() -> None:
    """minLength 1 in the answer schema: the grammar needs a character before the closing quote."""
    from qvl_label.engine.grammar import json_grammar

    schema = answer_schema(("en", "zh"), CONFIG, CONFIG.channel("generic"))
    grammar = json_grammar(schema)
    for lang in ("en", "zh"):
        copy = schema["properties"]["copy"]["properties"][lang]
        answer = {"title": "", "description": "", "selling_points": ["a", "b", "c"], "tags": []}
        assert {p.split(":")[0] for p in validate(answer, copy)} == {"$.title", "$.description"}
        for field in ("title", "description"):
            rule = next(line for line in grammar.splitlines() if line.startswith(f"copy-{lang}-{field} ::="))
            assert rule.split("::=")[1].strip().startswith('"\\"" char ('), rule  # one char, then more optional


def test_random_weights_write_a_title_and_a_description(tiny_model: object, product_paths: list[Path]) -> None:
    """The real engine on the tiny model's random weights, sampled, under the copy schema's grammar."""
    from qvl_label import tinymodel
    from qvl_label.engine.llama import LlamaCppEngine
    from qvl_label.engine.protocol import GenerationRequest
    from qvl_label.labeling.schema import copy_schema
    from qvl_label.pipeline.images import load_image

    assert isinstance(tiny_model, tinymodel.GeneratedModel)
    props = copy_schema(8)["properties"]
    schema: dict[str, object] = {
        "type": "object",
        "properties": {
            **{f"title{i}": props["title"] for i in range(4)},
            **{f"description{i}": {**props["description"], "maxLength": 8} for i in range(4)},
        },
        "required": [f"{k}{i}" for k in ("title", "description") for i in range(4)],
        "additionalProperties": False,
    }
    settings = EngineSettings(
        model_path=tiny_model.model,
        mmproj_path=tiny_model.mmproj,
        n_ctx=1024,
        image_min_tokens=8,
        image_max_tokens=16,
        temperature=1.0,
    )
    with LlamaCppEngine(settings) as engine:
        requests = [
            GenerationRequest(i, load_image(p, 8, 16).prepared, "Write the product copy.", "", schema, 200)
            for i, p in enumerate(product_paths[:2])
        ]
        results = list(engine.generate(requests))
    for result in results:
        assert result.error is None and result.finish_reason == "stop", (result.error, result.finish_reason)
        answer = json.loads(result.text)
        assert validate(answer, schema) == []
        assert all(value != "" for value in answer.values()), answer
